"""``ms2 quickstart``, ``ms2 serve`` and ``ms2 run <flow>``: the orchestrated entry points."""

from __future__ import annotations

import typer
from rich.console import Console
from rich.table import Table

from ms2core.algos.table import ALGORITHMS
from storage_schemas.flows import DemoToDatasetConfig, RerenderConfig
from storage_schemas.quickstart import QuickstartConfig
from storage_schemas.training import EvalConfig

console = Console()

def _flow(ref: str):
    """A flow imported only when it runs ("module:attr"), so the CLI starts without Prefect."""

    def load():
        import importlib

        module, name = ref.split(":")
        return getattr(importlib.import_module(module), name)

    return load


def _train_flow(algo: str):
    def load():
        from flows.train import TRAIN_FLOWS

        return TRAIN_FLOWS[algo]

    return load


#: flow name -> (loader of the flow, its config model); the train-<algo> flows come from the algorithm table.
FLOW_CONFIGS = {
    "quickstart": (_flow("flows.quickstart:quickstart"), QuickstartConfig),
    "demo-to-dataset": (_flow("flows.data:demo_to_dataset"), DemoToDatasetConfig),
    "rerender-demos": (_flow("flows.data:rerender_demos"), RerenderConfig),
    **{spec.flow_name: (_train_flow(name), spec.config_model) for name, spec in ALGORITHMS.items()},
    "evaluate": (_flow("flows.train:evaluate"), EvalConfig),
}


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
    _register_export(app)

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
        load_flow, model = FLOW_CONFIGS[name]
        cfg = load_config(model, config, set_)
        result = load_flow()(cfg)
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


def resolve_checkpoint(source: str) -> str:
    """A checkpoint path from a local path, or from an MLflow model URI (models:/name@alias, runs:/...)."""
    from pathlib import Path

    if "://" not in source and not source.startswith(("models:/", "runs:/")):
        return source
    import mlflow

    from flows.settings import configure_embedded_defaults
    from ms2core.errors import ConfigError

    configure_embedded_defaults()
    try:
        local = Path(mlflow.artifacts.download_artifacts(artifact_uri=source))
    except Exception as exc:  # noqa: BLE001 - any MLflow lookup failure becomes one clear message
        raise ConfigError(f"cannot download {source} from MLflow ({mlflow.get_tracking_uri()}): {exc}",
                          hint="check the model name/alias with the MLflow UI or `ms2 dashboard`") from exc
    found = sorted(local.rglob("*.pt")) if local.is_dir() else [local]
    if not found:
        raise ConfigError(f"{source} holds no checkpoint (.pt)", hint="export a model registered by a train-<algo> flow")
    return str(found[0])


def _register_export(app: typer.Typer) -> None:
    @app.command("export-policy")
    def export_policy(
        source: str = typer.Argument(..., help="checkpoint path or MLflow model URI, e.g. models:/ms2-PickCube-v0-bc@champion"),
        out: str = typer.Option(..., "--out", help="directory to write the package to"),
        overwrite: bool = typer.Option(False, help="replace an existing directory"),
    ) -> None:
        """Write a self-contained policy package (reset()/act(obs), weights, processing) for ManiSkill2 evaluation."""
        from ms2core.export import export_policy as export

        path = export(resolve_checkpoint(source), out, overwrite=overwrite)
        console.print(f"exported to {path}  (evaluate with: ms2 evaluate --policy {path})")

