"""``ms2 dashboard``: the web dashboard (datasets, training runs, models, pipeline status)."""

from __future__ import annotations

from pathlib import Path

import typer


def register(app: typer.Typer) -> None:
    @app.command()
    def dashboard(
        host: str = typer.Option("127.0.0.1", help="address to listen on (0.0.0.0 to serve other machines)"),
        port: int = typer.Option(8501, min=1, max=65535, help="TCP port"),
        data_dir: Path = typer.Option(None, "--data-dir", help="ms2flow data directory (default: $MS2FLOW_DATA_DIR or ./ms2data)"),
    ) -> None:
        """Serve the web dashboard: datasets and episodes, training curves, models, pipeline status."""
        from ms2core.errors import ConfigError

        if data_dir is not None and not data_dir.is_dir():
            raise ConfigError(
                f"--data-dir {data_dir} is not a directory",
                hint="pass the ms2flow data directory (the one holding datasets/ and mlflow.db), or leave it out to use $MS2FLOW_DATA_DIR / ./ms2data",
            )
        from flows.commands._output import console as make_console

        from dashboards.server import serve

        make_console().print(f"[bold]ms2flow dashboard[/bold] on http://{host}:{port} (Ctrl-C to stop)")
        serve(host=host, port=port, data_dir=str(data_dir) if data_dir is not None else None)
