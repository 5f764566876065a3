"""``ms2 evaluate``: run a checkpoint's policy for N episodes in parallel workers and save an EvaluationResult."""

from __future__ import annotations

from pathlib import Path

import typer


EVAL_FIELDS = {"checkpoint": "checkpoint", "num": "num_episodes", "num_procs": "num_procs", "seed": "seed",
               "sample_mode": "sample_mode", "save_traj": "save_traj", "save_video": "save_video",
               "output_dir": "output_dir", "backend": "backend", "max_episode_steps": "max_episode_steps",
               "continue_after_success": "continue_after_success"}


def register(app: typer.Typer) -> None:
    @app.command()
    def evaluate(
        ctx: typer.Context,
        checkpoint: Path = typer.Option(None, "--checkpoint", help="a .pt checkpoint written by ms2 train"),
        policy: Path = typer.Option(None, "--policy", help="a package written by ms2 export-policy (instead of --checkpoint)"),
        ml2l_checkpoint: Path = typer.Option(None, "--ml2l-checkpoint",
                                             help="a ManiSkill2-Learn checkpoint (model_*.ckpt) of a PointNet actor, "
                                                  "run with the ml2l observation layout; needs --ml2l-config"),
        ml2l_config: Path = typer.Option(None, "--ml2l-config", help="the ManiSkill2-Learn .py config it was trained with"),
        ml2l_cfg_options: list[str] = typer.Option(None, "--ml2l-cfg-option",
                                                   help="ML2L's --cfg-options KEY=VALUE on that config, repeatable "
                                                        "(e.g. env_cfg.control_mode=pd_ee_delta_pose)"),
        num: int = typer.Option(100, "--num", help="episodes"),
        num_procs: int = typer.Option(1, "--num-procs", help="worker processes (spawn), one env each"),
        seed: int = typer.Option(0, help="episode i uses seed + i"),
        sample_mode: str = typer.Option("mean", "--sample-mode", help="mean or sample"),
        save_traj: bool = typer.Option(False, "--save-traj", help="write ManiSkill2-format trajectory.h5/json"),
        save_video: bool = typer.Option(False, "--save-video", help="write one MP4 per episode (render camera)"),
        output_dir: Path = typer.Option(None, "--output-dir", help="default: <run>/eval/<checkpoint>_..."),
        backend: str = typer.Option(None, help="override the env backend (sapien or fake)"),
        max_episode_steps: int = typer.Option(None, "--max-episode-steps", help="override the step limit"),
        continue_after_success: bool = typer.Option(False, "--continue-after-success",
                                                    help="run to the step limit even after success"),
        force: bool = typer.Option(False, help="re-run even if a result for these options exists"),
        config: Path = typer.Option(None, "--config", "-c", help="YAML EvalConfig (options given here win over it)"),
        sets: list[str] = typer.Option(None, "--set", help="dotted override, e.g. --set num_procs=2 (repeatable)"),
    ) -> None:
        """Evaluate a checkpoint: success (at end / once), episode length and return with 95% intervals."""
        from flows.commands._options import config_from_cli
        from ms2core.errors import ConfigError
        from ms2core.evaluation import default_output_dir
        from pipelines.evaluate import run
        from storage_schemas.training import EvalConfig

        sources = sum(x is not None for x in (checkpoint, policy, ml2l_checkpoint))
        if sources > 1 or (sources == 0 and config is None):
            raise ConfigError("give exactly one of --checkpoint, --policy and --ml2l-checkpoint",
                              hint="--checkpoint run/checkpoints/final.pt, --policy DIR from ms2 export-policy, or "
                                   "--ml2l-checkpoint model.ckpt --ml2l-config CONFIG.py")
        if (ml2l_checkpoint is None) != (ml2l_config is None):
            raise ConfigError("--ml2l-checkpoint and --ml2l-config go together",
                              hint="ms2 evaluate --ml2l-checkpoint model.ckpt --ml2l-config configs/brl/bc/pointnet.py")
        if policy is not None:
            from ms2core.export import evaluate_exported

            _print(evaluate_exported(policy, num, seed, max_episode_steps, backend), None)
            return
        ml2l = {} if ml2l_checkpoint is None else {"checkpoint": ml2l_checkpoint, "ml2l_config": ml2l_config,
                                                   "ml2l_options": list(ml2l_cfg_options or [])}
        cfg = config_from_cli(ctx, EvalConfig, config, sets, EVAL_FIELDS, fixed=ml2l)
        if not cfg.checkpoint:
            raise ConfigError(f"no checkpoint to evaluate: {config} sets none",
                              hint="add checkpoint: PATH to the YAML file, or give --checkpoint PATH")
        result = run(cfg, force=force)
        _print(result, default_output_dir(cfg) / "result.json")


def _print(result, result_path) -> None:
    from flows.commands._output import console as make_console
    from rich.table import Table

    table = Table(title=f"{result.env_id} {result.obs_mode} step {result.checkpoint_step}: {result.num_episodes} episodes")
    for col in ("metric", "mean", "95% interval"):
        table.add_column(col)
    for name in ("success_once", "success_at_end", "episode_length", "episode_return"):
        stat = getattr(result, name)
        table.add_row(name, f"{stat.mean:.3f}", f"{stat.ci95_low:.3f} .. {stat.ci95_high:.3f}")
    console = make_console()
    console.print(table)
    if result_path is not None:
        console.print(f"result: {result_path}")
    if result.trajectory_path:
        console.print(f"trajectories: {result.trajectory_path}")
