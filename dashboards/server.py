"""Starting the dashboard: Streamlit in this process, headless, no telemetry, loopback by default.

Options are passed as Streamlit flags rather than a config.toml so that the
repository needs no .streamlit/ directory and nothing is read from the user's
home that could turn telemetry or the file watcher back on.
"""

from __future__ import annotations

import os
from pathlib import Path

APP_SCRIPT = Path(__file__).with_name("app.py")


def streamlit_flags(host: str, port: int) -> list[str]:
    return [
        "--server.address", host,
        "--server.port", str(port),
        "--server.headless", "true",
        # Do not watch files or poll the disk: the dashboard is an app, not a dev loop.
        "--server.fileWatcherType", "none",
        "--server.runOnSave", "false",
        "--browser.gatherUsageStats", "false",
        "--global.developmentMode", "false",
        "--client.toolbarMode", "viewer",
        "--client.showErrorDetails", "true",
        "--theme.base", "light",
    ]


def serve(host: str = "127.0.0.1", port: int = 8501, data_dir: str | None = None) -> None:
    """Run the dashboard until interrupted (blocks)."""
    if data_dir is not None:
        os.environ["MS2FLOW_DATA_DIR"] = str(Path(data_dir).absolute())
    # Belt and braces for Streamlit's own environment-variable configuration.
    os.environ["STREAMLIT_BROWSER_GATHER_USAGE_STATS"] = "false"
    os.environ["STREAMLIT_SERVER_HEADLESS"] = "true"
    from dashboards.read_mlflow import MLFLOW_CLIENT_ENV

    for key, value in MLFLOW_CLIENT_ENV.items():
        os.environ.setdefault(key, value)
    from streamlit.web import cli as streamlit_cli

    streamlit_cli.main(["run", str(APP_SCRIPT), *streamlit_flags(host, port)], prog_name="streamlit", standalone_mode=True)
