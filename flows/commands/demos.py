"""``ms2 demos generate|import|merge`` and ``ms2 replay``: thin shells over pipelines.demos and pipelines.replay."""

from __future__ import annotations

from pathlib import Path

import typer

SetOption = typer.Option(None, "--set", help="dotted override, e.g. --set num_episodes=100 (repeatable)")
ConfigOption = typer.Option(None, "--config", "-c", help="YAML config (configs/demos/*.yaml)")
OverwriteOption = typer.Option(False, "--overwrite", help="replace an existing output pair (kept until the new one "
                               "is complete); without it an existing pair made from other inputs is refused")
ForceOption = typer.Option(False, "--force", help="use a pair that fails the demo-pair checks anyway (recorded)")


GENERATE_FIELDS = {"env_id": "env_id", "num_episodes": "num_episodes", "seed_start": "seed_start",
                   "workers": "num_workers", "output": "output", "overwrite": "overwrite",
                   "speed": "planner_speed"}
IMPORT_FIELDS = {name: name for name in ("path", "name", "check_env", "overwrite", "force")}
MERGE_FIELDS = {"inputs": "inputs", "output": "output", "overwrite": "overwrite", "successful_only": "successful_only"}
REPLAY_FIELDS = {"path": "input", "target_control_mode": "target_control_mode", "workers": "num_workers",
                 "output": "output", "max_episodes": "max_episodes", "overwrite": "overwrite", "force": "force"}


def register(app: typer.Typer) -> None:
    demos_app = typer.Typer(help="Demo pairs (ManiSkill2 h5+json): generate by motion planning, import, merge.",
                            no_args_is_help=True)
    app.add_typer(demos_app, name="demos")

    @demos_app.command("generate")
    def generate(
        ctx: typer.Context,
        config: Path = ConfigOption,
        env_id: str = typer.Option(None, help="PickCube-v0, LiftCube-v0 or StackCube-v0"),
        num_episodes: int = typer.Option(None, "--num-episodes", "-n", help="successful episodes to keep"),
        seed_start: int = typer.Option(None, help="first seed tried"),
        workers: int = typer.Option(None, "--workers", "-j", help="simulator processes"),
        speed: float = typer.Option(None, "--speed", help="time scale of the planned motions (default 1: joint "
                                    "velocity 1 rad/s, acceleration 1 rad/s^2)"),
        output: str = typer.Option(None, "--output", "-o", help="path stem of the pair"),
        overwrite: bool = OverwriteOption,
        sets: list[str] = SetOption,
    ) -> None:
        """Generate successful expert demos with the mplib planner, recorded in pd_joint_pos with env states."""
        from flows.commands._output import console as make_console

        from flows.commands._options import config_from_cli
        from pipelines import demos
        from storage_schemas.demos import GenerateDemosConfig

        cfg = config_from_cli(ctx, GenerateDemosConfig, config, sets, GENERATE_FIELDS)
        result = demos.run(cfg)
        console = make_console()
        if result.skipped:
            console.print(f"[green]up to date:[/green] {result.h5_path} (same config; nothing to do)")
        else:
            console.print(f"[green]wrote[/green] {result.h5_path} + .json: {result.num_episodes} episodes of "
                          f"{result.env_id}, success rate {result.success_rate:.1%} over {result.seeds_tried} "
                          f"seeds, {result.episodes_per_s:.2f} episodes/s with {result.num_workers} worker(s)")
        console.print(f"digest {result.digest}")

    @demos_app.command("import")
    def import_(
        ctx: typer.Context,
        path: Path = typer.Argument(..., help="NAME.h5 (or NAME.json) of an existing ManiSkill2 demo pair"),
        name: str = typer.Option(None, help="registered name (default: the file's stem)"),
        check_env: bool = typer.Option(True, help="run the demo-pair checks (env id, control mode, seeds, values) "
                                       "against ManiSkill2's registry"),
        overwrite: bool = OverwriteOption,
        force: bool = ForceOption,
    ) -> None:
        """Check a ManiSkill2 demo pair (official or ours; `ms2 validate PAIR.h5` without replay) and register it
        under the data directory; a pair that fails the checks is refused unless --force."""
        from flows.commands._output import console as make_console

        from flows.commands._options import config_from_cli
        from pipelines import demos
        from storage_schemas.demos import ImportDemosConfig

        record = demos.import_demos(config_from_cli(ctx, ImportDemosConfig, None, None, IMPORT_FIELDS))
        state = "already registered" if record.skipped else "registered"
        if record.demo_checks != "passed":
            state += f" ({record.demo_checks} checks{': ' + ', '.join(record.demo_check_errors) if record.demo_check_errors else ''})"
        make_console().print(f"[green]{state}:[/green] {record.h5_path}: {record.env_id}, {record.control_mode}, "
                        f"{record.num_episodes} episodes, {record.total_steps} steps\ndigest {record.digest}")

    @demos_app.command("merge")
    def merge(
        ctx: typer.Context,
        inputs: list[Path] = typer.Argument(..., help="demo pairs (NAME.h5) of one task and control mode"),
        output: str = typer.Option(..., "--output", "-o", help="path stem of the merged pair"),
        overwrite: bool = OverwriteOption,
        successful_only: bool = typer.Option(False, "--successful-only",
                                             help="keep only the episodes whose json info says success (e.g. a "
                                                  "policy's ms2 evaluate --save-traj trajectories as demos)"),
    ) -> None:
        """Merge demo pairs into one (episodes renumbered), like ManiSkill2's merge_h5."""
        from flows.commands._output import console as make_console

        from flows.commands._options import config_from_cli
        from pipelines import demos
        from storage_schemas.demos import MergeDemosConfig

        result = demos.merge(config_from_cli(ctx, MergeDemosConfig, None, None, MERGE_FIELDS))
        state = "up to date" if result.skipped else "wrote"
        dropped = f" ({result.dropped_unsuccessful} unsuccessful left out)" if successful_only else ""
        make_console().print(f"[green]{state}:[/green] {result.h5_path}: {result.num_episodes} episodes from "
                        f"{len(result.sources)} pairs{dropped}\ndigest {result.digest}")

    @app.command("replay")
    def replay(
        ctx: typer.Context,
        path: Path = typer.Argument(None, help="source demo pair NAME.h5 (or set input in --config)"),
        target_control_mode: str = typer.Option(None, "--target-control-mode", "-t",
                                                help="e.g. pd_ee_delta_pose, pd_ee_delta_pos, pd_joint_delta_pos"),
        workers: int = typer.Option(None, "--workers", "-j", help="simulator processes"),
        output: str = typer.Option(None, "--output", "-o", help="path stem (default NAME.none.<mode>)"),
        max_episodes: int = typer.Option(None, "--count", help="convert only the first N episodes"),
        overwrite: bool = OverwriteOption,
        force: bool = ForceOption,
        config: Path = ConfigOption,
        sets: list[str] = SetOption,
    ) -> None:
        """Convert demos to another control mode by replay; writes the pair and a per-episode report."""
        from flows.commands._output import console as make_console
        from rich.table import Table

        from flows.commands._options import config_from_cli
        from pipelines import replay as replay_stage
        from storage_schemas.demos import ReplayConfig

        cfg = config_from_cli(ctx, ReplayConfig, config, sets, REPLAY_FIELDS)
        result = replay_stage.run(cfg)
        report = result.report
        console = make_console()
        if result.skipped:
            console.print(f"[green]up to date:[/green] {result.h5_path} (same source and options; nothing to do)")
        line = (f"{report.num_converted}/{report.num_episodes} episodes converted "
                f"{report.source_control_mode} -> {report.target_control_mode} ({report.conversion_rate:.1%})")
        if report.open_loop_successes is not None:
            line += f", open-loop success from seed {report.open_loop_successes}/{report.num_converted}"
        console.print(line + f", {report.episodes_per_s:.2f} episodes/s with {report.num_workers} worker(s)")
        if report.excluded:
            table = Table(title="excluded episodes")
            table.add_column("episode"), table.add_column("seed"), table.add_column("reason", overflow="fold")
            for ep in report.excluded:
                table.add_row(str(ep.episode_id), str(ep.seed), ep.reason)
            console.print(table)
        console.print(f"pair {result.h5_path}\nreport {result.report_path}\ndigest {result.digest}")
