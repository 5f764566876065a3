"""docker-compose.yml's topology as local processes on loopback, for the services test tier.

    PostgreSQL (Debian's binaries, a throw-away cluster)  <- Prefect server, MLflow server
    moto in server mode (S3)                              <- MLflow artifacts, Zarr datasets
    Dask scheduler + two workers                          <- render stage (MS2FLOW_DASK_SCHEDULER)
    Prefect process worker, pool `cpu`                    <- deployments of demo-to-dataset and train-bc

Every service is a real subprocess in its own session (process group), started on a free
port and waited on through its health check. ``stop()`` ends every group (SIGTERM, then
SIGKILL) and ``leftovers()`` lists any process that outlived it, so a test can assert that
nothing is left running. The client environment (``client_env``) is what a user sets to point
ms2flow at these servers: PREFECT_API_URL, MLFLOW_TRACKING_URI, MS2FLOW_DASK_SCHEDULER,
MS2FLOW_DATA_DIR, MS2FLOW_DATASETS_URL and the AWS_* variables.
"""

from __future__ import annotations

import glob
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
VENV_BIN = Path(sys.executable).parent
BUCKET = "ms2flow"
S3_KEY = S3_SECRET = "testing"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def postgres_bin_dir() -> Path | None:
    """Debian's newest installed PostgreSQL (bookworm: 15) server binaries."""
    dirs = sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=lambda d: int(Path(d).parent.name))
    dirs = [d for d in dirs if Path(d, "postgres").exists() and Path(d, "initdb").exists()]
    return Path(dirs[-1]) if dirs else None


def postgres_unavailable_reason() -> str | None:
    """Why the tier cannot run here, or None. PostgreSQL refuses to run as root: as root we use
    the `postgres` system user that Debian's package creates."""
    if postgres_bin_dir() is None:
        return "PostgreSQL server binaries not found under /usr/lib/postgresql/*/bin (scripts/setup installs them)"
    if os.geteuid() == 0:
        try:
            import pwd

            pwd.getpwnam("postgres")
        except KeyError:
            return "running as root and there is no `postgres` user to run PostgreSQL as"
        if shutil.which("runuser") is None:
            return "running as root without runuser to drop to the `postgres` user"
    return None


def _group_members(pgid: int) -> list[int]:
    """Live (non-zombie) processes of a process group, from /proc."""
    members = []
    for stat in glob.glob("/proc/[0-9]*/stat"):
        try:
            text = Path(stat).read_text()
        except OSError:
            continue
        rest = text[text.rindex(")") + 2:].split()
        state, group = rest[0], int(rest[2])
        if group == pgid and state != "Z":
            members.append(int(Path(stat).parent.name))
    return members


def descendants(pid: int) -> list[int]:
    """Every live descendant of ``pid`` (children in other sessions included)."""
    children: dict[int, list[int]] = {}
    for stat in glob.glob("/proc/[0-9]*/stat"):
        try:
            text = Path(stat).read_text()
        except OSError:
            continue
        rest = text[text.rindex(")") + 2:].split()
        if rest[0] != "Z":
            children.setdefault(int(rest[1]), []).append(int(Path(stat).parent.name))
    out, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            out.append(child)
            todo.append(child)
    return out


@dataclass
class Service:
    name: str
    proc: subprocess.Popen
    log_path: Path
    port: int | None = None
    extra_pids: list[int] = field(default_factory=list)  # processes it spawned into other sessions

    @property
    def pgid(self) -> int:
        return self.proc.pid  # start_new_session: the leader's pid is the group id

    def alive(self) -> bool:
        return self.proc.poll() is None

    def log_tail(self, n_chars: int = 3000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-n_chars:]
        except OSError:
            return ""

    def signal_tree(self, sig: int) -> list[int]:
        """Send ``sig`` to the group and to every descendant (flow runs start their own sessions)."""
        group = set(_group_members(self.pgid))
        outside = set(descendants(self.proc.pid)) - group  # each process gets the signal once: Prefect's CLI
        self.extra_pids = sorted(set(self.extra_pids) | outside)  # escalates on a repeated SIGTERM
        try:
            os.killpg(self.pgid, sig)
        except ProcessLookupError:
            pass
        for pid in outside:
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass
        return sorted(group | outside)

    def stop(self, sig: int = signal.SIGTERM, timeout_s: float = 10.0) -> None:
        self.signal_tree(sig)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline and self.leftovers():
            self.proc.poll()
            time.sleep(0.1)
        if self.leftovers():
            self.signal_tree(signal.SIGKILL)
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline and self.leftovers():
                self.proc.poll()
                time.sleep(0.1)
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            pass

    def leftovers(self) -> list[int]:
        self.proc.poll()
        pids = set(_group_members(self.pgid))
        for pid in self.extra_pids:
            try:
                text = Path(f"/proc/{pid}/stat").read_text()
                if text[text.rindex(")") + 2] != "Z":
                    pids.add(pid)
            except (OSError, ValueError):
                pass
        return sorted(pids)


class Topology:
    """Start, reach, fault and stop the services; see the module docstring."""

    def __init__(self, root: Path):
        self.root = root
        self.logs = root / "logs"
        self.logs.mkdir(parents=True, exist_ok=True)
        self.services: dict[str, Service] = {}
        self.stopped: list[Service] = []
        self.stop_seconds: dict[str, float] = {}  # replaced services (restarts), still checked for leftovers
        # Every port up front: client_env() names all services before they start.
        self.ports: dict[str, int] = {name: free_port() for name in ("postgres", "s3", "prefect", "mlflow", "dask")}
        self.data_dir = root / "ms2data"
        self.data_dir.mkdir(exist_ok=True)

    # -- environment -----------------------------------------------------------------------------
    @property
    def s3_endpoint(self) -> str:
        return f"http://127.0.0.1:{self.ports['s3']}"

    @property
    def prefect_api_url(self) -> str:
        return f"http://127.0.0.1:{self.ports['prefect']}/api"

    @property
    def mlflow_url(self) -> str:
        return f"http://127.0.0.1:{self.ports['mlflow']}"

    @property
    def scheduler_address(self) -> str:
        return f"tcp://127.0.0.1:{self.ports['dask']}"

    def pg_url(self, database: str, driver: str) -> str:
        return f"postgresql+{driver}://ms2flow@127.0.0.1:{self.ports['postgres']}/{database}"

    def aws_env(self) -> dict[str, str]:
        return dict(AWS_ACCESS_KEY_ID=S3_KEY, AWS_SECRET_ACCESS_KEY=S3_SECRET, AWS_DEFAULT_REGION="us-east-1",
                    AWS_ENDPOINT_URL=self.s3_endpoint, MLFLOW_S3_ENDPOINT_URL=self.s3_endpoint)

    def client_env(self) -> dict[str, str]:
        """The variables a user sets to use these servers (README "Scaling out")."""
        env = {k: v for k, v in os.environ.items()
               if not k.startswith(("PREFECT_", "MLFLOW_", "MS2FLOW_", "AWS_", "DASK_", "PYTEST_"))}
        env.update(self.aws_env())
        env.update(
            PREFECT_API_URL=self.prefect_api_url, PREFECT_HOME=str(self.root / "prefect-client"),
            PREFECT_SERVER_ANALYTICS_ENABLED="false", MLFLOW_TRACKING_URI=self.mlflow_url,
            MS2FLOW_DASK_SCHEDULER=self.scheduler_address, MS2FLOW_DATA_DIR=str(self.data_dir),
            MS2FLOW_DATASETS_URL=f"s3://{BUCKET}/datasets", PYTHONPATH=str(REPO_ROOT), PYTHONUNBUFFERED="1",
            DASK_LOGGING__DISTRIBUTED="error", PATH=f"{VENV_BIN}:{os.environ.get('PATH', '')}",
        )
        return env

    def storage_options(self) -> dict:
        return {"endpoint_url": self.s3_endpoint, "key": S3_KEY, "secret": S3_SECRET,
                "client_kwargs": {"region_name": "us-east-1"}}

    def s3_client(self):
        import boto3

        return boto3.client("s3", endpoint_url=self.s3_endpoint, aws_access_key_id=S3_KEY,
                            aws_secret_access_key=S3_SECRET, region_name="us-east-1")

    def s3_keys(self, prefix: str) -> list[str]:
        keys, token = [], None
        while True:
            kwargs = dict(Bucket=BUCKET, Prefix=prefix, **({"ContinuationToken": token} if token else {}))
            page = self.s3_client().list_objects_v2(**kwargs)
            keys += [o["Key"] for o in page.get("Contents", [])]
            if not page.get("IsTruncated"):
                return keys
            token = page["NextContinuationToken"]

    # -- processes -------------------------------------------------------------------------------
    def _spawn(self, name: str, argv: list[str], env: dict[str, str] | None = None, port: int | None = None,
               user: str | None = None, cwd: Path | None = None) -> Service:
        log_path = self.logs / f"{name}.log"
        if user:
            argv = ["runuser", "-u", user, "--", *argv]
        log = open(log_path, "ab")
        proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, env=env or self.client_env(),
                                cwd=str(cwd or REPO_ROOT), start_new_session=True)
        log.close()
        service = Service(name, proc, log_path, port)
        if name in self.services:
            self.stopped.append(self.services[name])
        self.services[name] = service
        return service

    def wait_for(self, name: str, check, timeout_s: float = 180.0) -> None:
        service = self.services[name]
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if not service.alive():
                raise RuntimeError(f"{name} exited with {service.proc.returncode}:\n{service.log_tail()}")
            try:
                if check():
                    return
            except Exception:  # noqa: BLE001 - not up yet
                pass
            time.sleep(0.3)
        raise TimeoutError(f"{name} not healthy after {timeout_s:.0f} s:\n{service.log_tail()}")

    @staticmethod
    def _http_ok(url: str) -> bool:
        with urllib.request.urlopen(url, timeout=2) as response:
            return response.status == 200

    def start_postgres(self) -> None:
        bin_dir = postgres_bin_dir()
        # Its own directory right under /tmp: pytest's tmp dirs are 0700 root, which `postgres` cannot enter.
        pg_root = self.pg_root = Path(tempfile.mkdtemp(prefix="ms2flow-pg-"))
        user = None
        if os.geteuid() == 0:
            user = "postgres"
            shutil.chown(pg_root, user="postgres")
        run_as = ["runuser", "-u", user, "--"] if user else []
        subprocess.run([*run_as, str(bin_dir / "initdb"), "-D", str(pg_root / "data"), "-U", "ms2flow",
                        "--auth=trust", "-E", "UTF8", "--no-sync"], check=True, capture_output=True)
        port = self.ports["postgres"]
        # fsync off: a throw-away cluster; crash safety is not what these tests are about.
        self._spawn("postgres", [str(bin_dir / "postgres"), "-D", str(pg_root / "data"), "-h", "127.0.0.1",
                                 "-p", str(port), "-k", str(pg_root), "-c", "fsync=off", "-c", "max_connections=200"],
                    env={"PATH": os.environ.get("PATH", ""), "LANG": "C.UTF-8"}, port=port, user=user, cwd=pg_root)
        self.wait_for("postgres", lambda: subprocess.run(
            [str(bin_dir / "pg_isready"), "-q", "-h", "127.0.0.1", "-p", str(port)]).returncode == 0, 60)
        for database in ("prefect", "mlflow"):
            subprocess.run([str(bin_dir / "createdb"), "-h", "127.0.0.1", "-p", str(port), "-U", "ms2flow", database],
                           check=True, capture_output=True)

    def start_s3(self) -> None:
        port = self.ports["s3"]
        exe = shutil.which("moto_server", path=str(VENV_BIN)) or "moto_server"
        self._spawn("s3", [exe, "-H", "127.0.0.1", "-p", str(port)], port=port)
        self.wait_for("s3", lambda: socket.create_connection(("127.0.0.1", port), 0.5).close() is None, 60)
        self.s3_client().create_bucket(Bucket=BUCKET)

    def start_prefect_server(self) -> None:
        port = self.ports["prefect"]
        env = self.client_env()
        env.pop("PREFECT_API_URL")
        env.update(PREFECT_HOME=str(self.root / "prefect-server"),
                   PREFECT_API_DATABASE_CONNECTION_URL=self.pg_url("prefect", "asyncpg"),
                   PREFECT_UI_ENABLED="false")
        self._spawn("prefect-server", [str(VENV_BIN / "prefect"), "server", "start", "--host", "127.0.0.1",
                                       "--port", str(port)], env=env, port=port)

    def start_mlflow(self) -> None:
        port = self.ports["mlflow"]
        self._spawn("mlflow", [
            str(VENV_BIN / "mlflow"), "server", "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
            "--backend-store-uri", self.pg_url("mlflow", "psycopg2"),
            "--artifacts-destination", f"s3://{BUCKET}/mlartifacts",
            "--allowed-hosts", f"127.0.0.1:{port},localhost:{port}",
        ], port=port)

    def wait_for_servers(self) -> None:
        self.wait_for("mlflow", lambda: self._http_ok(f"{self.mlflow_url}/health"), 180)
        self.wait_for("prefect-server", lambda: self._http_ok(f"{self.prefect_api_url}/health"), 240)

    def start_dask(self, n_workers: int = 2) -> None:
        port = self.ports["dask"]
        self._spawn("dask-scheduler", [str(VENV_BIN / "dask"), "scheduler", "--host", "127.0.0.1", "--port",
                                       str(port), "--no-dashboard"], port=port)
        self.wait_for("dask-scheduler", lambda: socket.create_connection(("127.0.0.1", port), 0.5).close() is None, 60)
        for i in range(n_workers):
            self.start_dask_worker(f"dask-worker-{i + 1}")
        self.wait_for_dask_workers(n_workers)

    def start_dask_worker(self, name: str) -> Service:
        # One process, one thread each: a worker is one simulator process (compose: --nthreads 1).
        return self._spawn(name, [str(VENV_BIN / "dask"), "worker", self.scheduler_address, "--name", name,
                                  "--nthreads", "1", "--nworkers", "1", "--memory-limit", "2GiB", "--no-dashboard"])

    def dask_workers(self) -> list[str]:
        from distributed import Client

        with Client(self.scheduler_address, timeout="10s") as client:
            return sorted(w["name"] for w in client.scheduler_info(n_workers=-1)["workers"].values())

    def wait_for_dask_workers(self, n: int, timeout_s: float = 60) -> None:
        self.wait_for("dask-scheduler", lambda: len(self.dask_workers()) == n, timeout_s)

    def start_prefect_worker(self, pool: str = "cpu") -> Service:
        prefect = str(VENV_BIN / "prefect")
        subprocess.run([prefect, "work-pool", "create", pool, "--type", "process", "--overwrite"],
                       env=self.client_env(), check=True, capture_output=True, timeout=120)
        service = self._spawn("prefect-worker", [prefect, "worker", "start", "--pool", pool, "--type", "process",
                                                 "--name", f"ms2-{pool}-{len(self.stopped)}"])
        self.wait_for("prefect-worker", lambda: "started!" in service.log_tail(20000), 120)
        return service

    # -- Prefect REST (plain HTTP: the test process keeps its own embedded Prefect settings) ---------
    def prefect_api(self, method: str, path: str, body: dict | None = None):
        import json

        request = urllib.request.Request(f"{self.prefect_api_url}{path}", method=method,
                                         data=None if body is None else json.dumps(body).encode(),
                                         headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=30) as response:
            return json.loads(response.read() or b"null")

    def deploy(self, pool: str, entrypoints: list[str]) -> None:
        """Register deployments of the repository's flows (from source: this checkout) in ``pool``."""
        result = subprocess.run([sys.executable, "-m", "tests.services.prefect_ops", "deploy", pool, *entrypoints],
                                env=self.client_env(), cwd=str(REPO_ROOT), capture_output=True, text=True, timeout=300)
        if result.returncode != 0:
            raise RuntimeError(f"deploy failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}")

    def run_deployment(self, name: str, parameters: dict) -> str:
        flow_name, deployment_name = name.split("/")
        deployment = self.prefect_api("GET", f"/deployments/name/{flow_name}/{deployment_name}")
        flow_run = self.prefect_api("POST", f"/deployments/{deployment['id']}/create_flow_run",
                                    {"parameters": parameters})
        return flow_run["id"]

    def flow_run(self, flow_run_id: str) -> dict:
        return self.prefect_api("GET", f"/flow_runs/{flow_run_id}")

    def task_runs(self, flow_run_id: str) -> dict[str, list[dict]]:
        """Task runs of a flow run by task name (``render-dataset``), oldest first."""
        runs = self.prefect_api("POST", "/task_runs/filter", {"flow_runs": {"id": {"any_": [flow_run_id]}}})
        out: dict[str, list[dict]] = {}
        for run in sorted(runs, key=lambda r: r["created"]):
            out.setdefault(run["name"].rsplit("-", 1)[0], []).append(run)
        return out

    def wait_flow_run(self, flow_run_id: str, timeout_s: float = 240) -> dict:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            run = self.flow_run(flow_run_id)
            if run["state"] and run["state"]["type"] in ("COMPLETED", "FAILED", "CRASHED", "CANCELLED"):
                return run
            time.sleep(0.5)
        raise TimeoutError(f"flow run {flow_run_id} still {run['state']} after {timeout_s:.0f} s:\n"
                           f"{self.services['prefect-worker'].log_tail()}")

    # -- teardown --------------------------------------------------------------------------------
    def stop(self) -> None:
        """Clients first, servers last (PostgreSQL with a fast shutdown: SIGINT)."""
        order = ["prefect-worker", "dask-worker-1", "dask-worker-2", "dask-scheduler", "mlflow", "prefect-server",
                 "s3", "postgres"]
        names = [n for n in order if n in self.services] + [n for n in self.services if n not in order]
        for name in names:
            started = time.monotonic()
            self.services[name].stop(signal.SIGINT if name == "postgres" else signal.SIGTERM)
            self.stop_seconds[name] = time.monotonic() - started
        for service in self.stopped:
            service.stop(signal.SIGKILL)
        if getattr(self, "pg_root", None) is not None:
            shutil.rmtree(self.pg_root, ignore_errors=True)

    def leftovers(self) -> dict[str, list[int]]:
        every = [*self.stopped, *self.services.values()]
        return {s.name: s.leftovers() for s in every if s.leftovers()}
