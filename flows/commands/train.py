"""``ms2 train <algo>``: one sub-command per entry of pipelines.train.ALGORITHMS (bc, and others as they land)."""

from __future__ import annotations

from pathlib import Path

import typer

from storage_schemas.rl import DAPGConfig, GAILConfig, PPOConfig, SACConfig
from storage_schemas.training import BCConfig

# Config models per algorithm (light imports only; the train functions are looked up in pipelines.train).
TRAIN_CONFIGS = {"bc": BCConfig, "ppo": PPOConfig, "dapg": DAPGConfig, "sac": SACConfig, "gail": GAILConfig}


def _make_command(algo: str, model):
    def command(
        config: Path = typer.Option(None, "--config", "-c", help=f"YAML file of {model.__name__} (configs/{algo}/*.yaml)"),
        set_: list[str] = typer.Option([], "--set", help="dotted override, repeatable: --set train.batch_size=256"),
        resume_from: Path = typer.Option(None, "--resume-from", help="checkpoint to continue from (same config)"),
        device: str = typer.Option(None, help="shortcut for --set train.device=..."),
        force: bool = typer.Option(False, "--force", help="train on inputs that failed validation, were never "
                                   "validated, changed since or are incomplete (a warning, recorded in the run)"),
        overwrite: bool = typer.Option(False, "--overwrite", help="replace the run in an explicit run_dir "
                                       "(the old run is kept until the new one finished)"),
    ) -> None:
        from rich.console import Console

        from ms2core.config import load_config
        from pipelines.train import run

        device_key, prefix = ("train.device", "") if algo == "bc" else ("run.device", "run.")
        overrides = list(set_) + ([f"{device_key}={device}"] if device else [])
        overrides += ([f"{prefix}force=true"] if force else []) + ([f"{prefix}overwrite=true"] if overwrite else [])
        cfg = load_config(model, config, overrides)
        result = run(cfg, algo=algo, resume_from=str(resume_from) if resume_from else None)
        console = Console()
        for problem in result.forced_inputs:
            console.print(f"[yellow]warning: --force[/yellow] trained on {problem}")
        if result.skipped:
            console.print(f"[yellow]already trained[/yellow] with this config: {result.final_checkpoint}")
        else:
            loss = "" if result.final_loss is None else f", final loss {result.final_loss:.5g}"
            if algo == "bc":
                rate = f"{result.updates_per_s:.1f} updates/s"
            else:  # online RL: a few slow updates per rollout; the env-step rate is the informative one
                rate = f"{result.env_steps_per_s or 0.0:.0f} env steps/s"
            console.print(f"[green]{algo}[/green] trained steps {result.start_step}..{result.num_steps} at {rate}{loss}")
        console.print(f"run dir: {result.run_dir}\ncheckpoint: {result.final_checkpoint}")
        if result.eval_success_rate is not None:
            console.print(f"final evaluation: success {result.eval_success_rate:.1%}, "
                          f"mean return {result.eval_mean_return:.2f}")
        if result.evaluation is not None:
            ev = result.evaluation
            console.print(f"success once {ev.success_once.mean:.1%} (95% {ev.success_once.ci95_low:.1%}-"
                          f"{ev.success_once.ci95_high:.1%}) over {ev.num_episodes} episodes")

    command.__doc__ = f"Train {algo.upper()} from a YAML config (validated by {model.__name__})."
    return command


def register(app: typer.Typer) -> None:
    train_app = typer.Typer(help="Train a policy: ms2 train <algo> --config configs/<algo>/<task>_<obs>.yaml",
                            no_args_is_help=True)
    for algo, model in TRAIN_CONFIGS.items():
        train_app.command(algo)(_make_command(algo, model))
    app.add_typer(train_app, name="train")
