"""Start a local Prefect server (SQLite under the data dir) when no PREFECT_API_URL is set.

Flows run fine without one (Prefect's ephemeral API), but deployments
(`ms2 serve`, `prefect deployment run ...`, the UI) need a server that
outlives a single process.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass

from flows.settings import configure_embedded_defaults
from ms2core.errors import Ms2Error


class ServerStartError(Ms2Error, RuntimeError):
    pass


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def api_healthy(api_url: str, timeout_s: float = 2.0) -> bool:
    try:
        with urllib.request.urlopen(f"{api_url.rstrip('/')}/health", timeout=timeout_s) as resp:
            return resp.status == 200
    except (urllib.error.URLError, OSError, TimeoutError):
        return False


@dataclass
class LocalPrefectServer:
    process: subprocess.Popen
    api_url: str
    log_path: str

    def stop(self, timeout_s: float = 20.0) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def start_local_server(port: int | None = None, startup_timeout_s: float = 120.0) -> LocalPrefectServer:
    """``prefect server start`` on 127.0.0.1 with the embedded SQLite database; waits until healthy."""
    configure_embedded_defaults()
    port = port or free_port()
    api_url = f"http://127.0.0.1:{port}/api"
    home = os.environ["PREFECT_HOME"]
    os.makedirs(home, exist_ok=True)
    log_path = os.path.join(home, f"server-{port}.log")
    env = {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"}
    env.update(PREFECT_SERVER_ANALYTICS_ENABLED="false", PREFECT_UI_API_URL=api_url)
    log = open(log_path, "ab")
    process = subprocess.Popen(
        [sys.executable, "-m", "prefect", "server", "start", "--host", "127.0.0.1", "--port", str(port)],
        stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True,
    )
    deadline = time.monotonic() + startup_timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise ServerStartError(f"the Prefect server exited with code {process.returncode}",
                                   hint=f"see its log: {log_path}")
        if api_healthy(api_url):
            return LocalPrefectServer(process, api_url, log_path)
        time.sleep(0.5)
    LocalPrefectServer(process, api_url, log_path).stop()
    raise ServerStartError(f"the Prefect server did not become healthy within {startup_timeout_s:.0f} s",
                           hint=f"see its log: {log_path}")
