"""The ``ms2`` command line. Each command is a thin shell over a pipeline stage or flow.

Heavy imports (simulator, Prefect, MLflow, torch) happen inside commands, so
``ms2 --help`` is instant and a missing optional piece only breaks the command
that needs it.
"""

from __future__ import annotations

import sys

import typer
from rich.console import Console
from rich.table import Table

from ms2core.errors import Ms2Error

app = typer.Typer(
    name="ms2",
    help="ms2flow: demos -> Zarr datasets -> training -> evaluation on ManiSkill2, as pipeline stages.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
console = Console()
err_console = Console(stderr=True)


@app.callback()
def _root() -> None:
    """ms2flow: demos -> Zarr datasets -> training -> evaluation on ManiSkill2."""


@app.command()
def doctor(
    env_id: str = typer.Option("PickCube-v0", help="task to render one frame of"),
) -> None:
    """Check versions, the Vulkan device SAPIEN uses, and render one frame."""
    from ms2core.envs.doctor import run_doctor

    report = run_doctor(env_id)
    table = Table(title="ms2flow doctor", show_header=False)
    for name, ver in report.versions.items():
        table.add_row(name, ver)
    table.add_row("vulkan devices", "\n".join(report.vulkan_devices) or "none")
    table.add_row("ms2flow vulkan layer", report.layer_manifest)
    for cam, stats in report.frame_stats.items():
        table.add_row(
            f"{env_id} {cam}",
            f"rgb mean {stats['rgb_mean']:.1f} std {stats['rgb_std']:.1f}, "
            f"depth {stats['depth_min_m']:.2f}-{stats['depth_max_m']:.2f} m",
        )
    if report.seconds_to_first_frame is not None:
        table.add_row("first frame", f"{report.seconds_to_first_frame:.1f} s (includes shader compile)")
    console.print(table)
    if not report.ok:
        for problem in report.problems:
            err_console.print(f"[red]problem:[/red] {problem}")
        raise typer.Exit(1)
    console.print("[green]ok:[/green] simulation and rendering work on this machine")


def _register_commands() -> None:
    import importlib

    from flows.commands import COMMAND_MODULES

    for name in COMMAND_MODULES:
        importlib.import_module(f"flows.commands.{name}").register(app)


_register_commands()


def main() -> None:
    try:
        app()
    except Ms2Error as exc:
        err_console.print(f"[red]error:[/red] {exc.message}")
        if exc.hint:
            err_console.print(f"  [yellow]hint:[/yellow] {exc.hint}")
        sys.exit(exc.exit_code)


if __name__ == "__main__":
    main()
