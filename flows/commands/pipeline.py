"""``ms2 quickstart``, ``ms2 serve`` and ``ms2 run <flow>``: the orchestrated entry points."""

from __future__ import annotations

import typer
from rich.console import Console
from rich.table import Table

console = Console()

FLOW_CONFIGS = {
    "quickstart": ("flows.quickstart:quickstart", "storage_schemas.quickstart:QuickstartConfig"),
    "demo-to-dataset": ("flows.data:demo_to_dataset", "storage_schemas.flows:DemoToDatasetConfig"),
    "rerender-demos": ("flows.data:rerender_demos", "storage_schemas.flows:RerenderConfig"),
    "train-bc": ("flows.train:train_bc", "storage_schemas.training:BCConfig"),
    "train-ppo": ("flows.train:train_ppo", "storage_schemas.rl:PPOConfig"),
    "train-dapg": ("flows.train:train_dapg", "storage_schemas.rl:DAPGConfig"),
    "train-sac": ("flows.train:train_sac", "storage_schemas.rl:SACConfig"),
    "train-gail": ("flows.train:train_gail", "storage_schemas.rl:GAILConfig"),
    "evaluate": ("flows.train:evaluate", "storage_schemas.training:EvalConfig"),
}


def _load(ref: str):
    import importlib

    module, name = ref.split(":")
    return getattr(importlib.import_module(module), name)


def _print_quickstart(summary) -> None:
    from flows.settings import mlflow_tracking_uri
    from ms2core.paths import data_dir

    table = Table(title=f"ms2flow quickstart: {summary.env_id} done in {summary.wall_s / 60:.1f} min", show_header=False)
    rate = "n/a" if summary.success_rate is None else f"{summary.success_rate:.0%}"
    table.add_row("success rate (BC, short run)", rate)
    table.add_row("dataset", f"{summary.dataset}\n{summary.n_episodes} episodes, {summary.n_rows} transitions, "
                             f"validation {summary.validation_status}")
    table.add_row("checkpoint", summary.checkpoint)
    table.add_row("MLflow run", f"{summary.run_id} (experiment {summary.env_id})")
    if summary.model_name:
        table.add_row("registered model", f"models:/{summary.model_name}/{summary.model_version}")
    table.add_row("Prefect UI", "ms2 serve   (then open http://127.0.0.1:4200)")
    table.add_row("MLflow UI", f"mlflow ui --backend-store-uri {mlflow_tracking_uri()}")
    table.add_row("dashboard", "ms2 dashboard")
    table.add_row("data directory", str(data_dir()))
    console.print(table)


def register(app: typer.Typer) -> None:
    @app.command()
    def quickstart(
        config: str = typer.Option(None, "--config", "-c", help="YAML QuickstartConfig"),
        set_: list[str] = typer.Option([], "--set", help="override, e.g. --set num_demos=20"),
    ) -> None:
        """Demos -> replay -> render point clouds -> validate -> BC -> evaluate -> register, on PickCube-v0."""
        from flows.settings import configure_embedded_defaults

        configure_embedded_defaults()
        from flows.quickstart import quickstart as quickstart_flow
        from ms2core.config import load_config
        from storage_schemas.quickstart import QuickstartConfig

        cfg = load_config(QuickstartConfig, config, set_)
        _print_quickstart(quickstart_flow(cfg))

    @app.command("run")
    def run_flow(
        name: str = typer.Argument(..., help=f"one of: {', '.join(FLOW_CONFIGS)}"),
        config: str = typer.Option(None, "--config", "-c", help="YAML config of the flow"),
        set_: list[str] = typer.Option([], "--set", help="dotted override, repeatable"),
    ) -> None:
        """Run a flow here (Prefect's local API, or PREFECT_API_URL's server)."""
        from flows.settings import configure_embedded_defaults
        from ms2core.config import load_config
        from ms2core.errors import unknown_choice

        if name not in FLOW_CONFIGS:
            raise unknown_choice("flow", name, FLOW_CONFIGS)
        configure_embedded_defaults()
        flow_ref, model_ref = FLOW_CONFIGS[name]
        cfg = load_config(_load(model_ref), config, set_)
        result = _load(flow_ref)(cfg)
        console.print(result.model_dump_json(indent=2) if hasattr(result, "model_dump_json") else result)

    @app.command()
    def serve(
        port: int = typer.Option(4200, help="port of the local Prefect server (when PREFECT_API_URL is unset)"),
        rerender_cron: str = typer.Option("0 3 * * *", help="schedule of rerender-demos"),
    ) -> None:
        """Serve every deployment (demo-to-dataset, rerender-demos, train-*, evaluate) from this process."""
        import os

        from flows.settings import configure_embedded_defaults

        configure_embedded_defaults()
        server = None
        if not os.environ.get("PREFECT_API_URL"):
            from flows.server import start_local_server

            console.print(f"starting a local Prefect server on 127.0.0.1:{port} ...")
            server = start_local_server(port)
            os.environ["PREFECT_API_URL"] = server.api_url
            console.print(f"Prefect UI: {server.api_url[:-4]}   (PREFECT_API_URL={server.api_url})")
        try:
            from flows.deployments import serve_all

            serve_all(rerender_cron)
        finally:
            if server is not None:
                server.stop()
