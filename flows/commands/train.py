"""``ms2 train <algo>``: one sub-command per entry of the algorithm table (ms2core.algos.table.ALGORITHMS)."""

from __future__ import annotations

from pathlib import Path

import typer

from ms2core.algos.table import ALGORITHMS, AlgorithmSpec


def _report(console, algo: str, result) -> None:
    for problem in result.forced_inputs:
        console.print(f"[yellow]warning: --force[/yellow] trained on {problem}")
    if result.skipped:
        console.print(f"[yellow]already trained[/yellow] with this config: {result.final_checkpoint}")
    else:
        loss = "" if result.final_loss is None else f", final loss {result.final_loss:.5g}"
        if result.env_steps is None:
            done = f"updates {result.start_update}..{result.updates} at {result.updates_per_s:.1f} updates/s"
        else:  # online RL: a few slow updates per rollout; the env-step rate is the informative one
            done = (f"env steps {result.start_env_step or 0}..{result.env_steps} ({result.updates} updates) at "
                    f"{result.env_steps_per_s or 0.0:.0f} env steps/s")
        console.print(f"[green]{algo}[/green] trained {done}{loss}")
    console.print(f"run dir: {result.run_dir}\ncheckpoint: {result.final_checkpoint}")
    if result.eval_success_rate is not None:
        console.print(f"final evaluation: success {result.eval_success_rate:.1%}, "
                      f"mean return {result.eval_mean_return:.2f}")
    if result.evaluation is not None:
        ev = result.evaluation
        console.print(f"success once {ev.success_once.mean:.1%} (95% {ev.success_once.ci95_low:.1%}-"
                      f"{ev.success_once.ci95_high:.1%}) over {ev.num_episodes} episodes")


def _make_command(spec: AlgorithmSpec):
    algo, model = spec.name, spec.config_model

    def command(
        config: Path = typer.Option(None, "--config", "-c", help=f"YAML file of {model.__name__} (configs/{algo}/*.yaml)"),
        set_: list[str] = typer.Option([], "--set", help="dotted override, repeatable: --set train.batch_size=256"),
        resume_from: Path = typer.Option(None, "--resume-from", help="checkpoint to continue from (same config)"),
        device: str = typer.Option(None, help="shortcut for --set run.device=... (cpu, cuda, cuda:N, auto)"),
        devices: str = typer.Option(None, help="data-parallel learners, shortcut for --set run.devices=...: "
                                    "0,1 (cuda:0 and cuda:1), 2 (two learners of run.device's kind), cpu,cpu"),
        force: bool = typer.Option(False, "--force", help="train on inputs that failed validation, were never "
                                   "validated, changed since or are incomplete (a warning, recorded in the run)"),
        overwrite: bool = typer.Option(False, "--overwrite", help="replace the run in an explicit run_dir "
                                       "(the old run is kept until the new one finished)"),
    ) -> None:
        from rich.console import Console

        from ms2core.config import load_config
        from pipelines.train import run

        from flows.commands._options import devices_override

        overrides = list(set_) + ([f"run.device={device}"] if device else [])
        overrides = ([devices_override(devices)] if devices else []) + overrides  # an explicit --set wins
        overrides += (["run.force=true"] if force else []) + (["run.overwrite=true"] if overwrite else [])
        cfg = load_config(model, config, overrides)
        result = run(cfg, algo=algo, resume_from=str(resume_from) if resume_from else None)
        _report(Console(), algo, result)

    command.__doc__ = f"Train {algo.upper()}: {spec.summary} (YAML config validated by {model.__name__})."
    return command


def register(app: typer.Typer) -> None:
    train_app = typer.Typer(help="Train a policy: ms2 train <algo> --config configs/<algo>/<task>_<obs>.yaml",
                            no_args_is_help=True)
    for algo, spec in ALGORITHMS.items():
        train_app.command(algo)(_make_command(spec))
    app.add_typer(train_app, name="train")
