"""``ms2 quickstart``, ``ms2 serve`` and ``ms2 run <flow>``: the orchestrated entry points."""

from __future__ import annotations

import typer
from rich.table import Table

from flows.commands._output import console as _console

console = _console()
from ms2core.algos.table import ALGORITHMS
from storage_schemas.flows import DemoToDatasetConfig, RerenderConfig
from storage_schemas.quickstart import QuickstartConfig
from storage_schemas.training import EvalConfig


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


def quickstart_rows(summary) -> list[tuple[str, str]]:
    """The summary as (label, text) rows; paths relative to the data directory (its own row says where)."""
    from flows.commands._output import shown_path
    from flows.settings import mlflow_tracking_uri
    from ms2core.paths import data_dir

    rate = "n/a" if summary.success_rate is None else f"{summary.success_rate:.0%}"
    ci = getattr(summary, "success_ci95", None)
    n_eval = getattr(summary, "eval_episodes", 0)
    if ci is not None:
        rate += f" (95% interval {ci[0]:.0%}-{ci[1]:.0%}" + (f", {n_eval} episodes)" if n_eval else ")")
    rows = [("success rate (BC)", rate)]
    if getattr(summary, "meaning", ""):
        rows.append(("what it means", summary.meaning))
    rows.append(("dataset", f"{shown_path(summary.dataset)}\n{summary.n_episodes} episodes, {summary.n_rows} "
                            f"transitions, validation {summary.validation_status}"))
    if getattr(summary, "pointcloud_dataset", None):
        rows.append(("point-cloud dataset", f"{shown_path(summary.pointcloud_dataset)}\n"
                                            f"{summary.pointcloud_episodes} episodes, validation "
                                            f"{summary.pointcloud_validation_status}"))
    rows += [("checkpoint", shown_path(summary.checkpoint)),
             ("MLflow run", f"{summary.run_id} (experiment {summary.env_id})")]
    if summary.model_name:
        rows.append(("registered model", f"models:/{summary.model_name}/{summary.model_version}"))
    rows += [("Prefect UI", "ms2 serve   (then open http://127.0.0.1:4200)"),
             ("MLflow UI", f"mlflow ui --backend-store-uri {mlflow_tracking_uri()}"),
             ("dashboard", "ms2 dashboard"),
             ("data directory", str(data_dir()))]
    for i, step in enumerate(getattr(summary, "next_steps", None) or []):
        rows.append(("next" if i == 0 else "", step))
    return rows


def quickstart_table(summary, width: int) -> Table:
    """The summary as a two-column table that fits ``width`` columns: labels never wrap, long paths and
    commands break only after a '/' (fit_text), so each stays whole and readable."""
    from flows.commands._output import fit_text, value_width

    rows = quickstart_rows(summary)
    label_width = max(len(label) for label, _ in rows)
    text_width = value_width(width, [label_width])
    table = Table(title=f"ms2flow quickstart: {summary.env_id} done in {summary.wall_s / 60:.1f} min",
                  show_header=False)
    table.add_column("", no_wrap=True, width=label_width)
    table.add_column("", overflow="fold", max_width=text_width)
    for label, text in rows:
        table.add_row(label, "\n".join(fit_text(line, text_width) for line in text.split("\n")))
    return table


def _print_quickstart(summary) -> None:
    console.print(quickstart_table(summary, console.width))


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
        resume_from: str = typer.Option(None, "--resume-from", help="train-<algo> flows: the checkpoint to continue "
                                        "(its run, env step counter, optimiser and RNG), e.g. one trained on a GPU host"),
    ) -> None:
        """Run a flow here (Prefect's local API, or PREFECT_API_URL's server)."""
        from flows.settings import configure_embedded_defaults
        from ms2core.config import load_config
        from ms2core.errors import ConfigError, unknown_choice

        if name not in FLOW_CONFIGS:
            raise unknown_choice("flow", name, FLOW_CONFIGS)
        train_flows = sorted(spec.flow_name for spec in ALGORITHMS.values())
        if resume_from is not None and name not in train_flows:
            raise ConfigError(f"--resume-from is an option of the training flows, not of {name!r}",
                              hint=f"flows that resume a checkpoint: {', '.join(train_flows)}")
        configure_embedded_defaults()
        load_flow, model = FLOW_CONFIGS[name]
        cfg = load_config(model, config, set_)
        result = load_flow()(cfg, **({} if resume_from is None else {"resume_from": resume_from}))
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

