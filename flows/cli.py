"""The ``ms2`` command line. Each command is a thin shell over a pipeline stage or flow.

Heavy imports (simulator, Prefect, MLflow, torch) happen inside commands, so
``ms2 --help`` is instant and a missing optional piece only breaks the command
that needs it.
"""

from __future__ import annotations

import sys

import typer
from rich.table import Table

from flows.commands._output import console as make_console
from flows.commands._output import fit_text
from ms2core.errors import Ms2Error

app = typer.Typer(
    name="ms2",
    help="ms2flow: demos -> Zarr datasets -> training -> evaluation on ManiSkill2, as pipeline stages.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
console = make_console()  # soft-wrapped: a long path is never split off a terminal (flows/commands/_output)
err_console = make_console(stderr=True)


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
    table.add_column("", no_wrap=True)
    table.add_column("", overflow="fold")
    for name, ver in report.versions.items():
        table.add_row(name, ver)
    r = report.renderer
    table.add_row("render device", f"{r['name']} ({r['driver']}, selected: {r['selection']})" if r else "none")
    table.add_row("vulkan devices", "\n".join(report.vulkan_devices) or "none")
    table.add_row("ms2flow vulkan layer", fit_text(str(report.layer_manifest), max(console.width - 30, 20)))
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


def _print_error(message: str, hint: str | None) -> None:
    # soft_wrap: rich hard-wraps at 80 columns when stderr is not a terminal, which split paths and
    # words ("does not" / "exist") across lines in logs and made messages ungreppable.
    err_console.print(f"[red]error:[/red] {message}", soft_wrap=True, markup=True, highlight=False)
    if hint:
        err_console.print(f"  [yellow]hint:[/yellow] {hint}", soft_wrap=True, highlight=False)


def _storage_error(exc: OSError) -> Ms2Error:
    """An OSError that reached the top: say which file, why, and what to do (disk full, permissions...)."""
    import errno
    import os

    hints = {
        errno.ENOSPC: "the disk is full: free space or write elsewhere; finished outputs were kept",
        errno.EDQUOT: "the disk quota is exceeded: free space or write elsewhere",
        errno.EACCES: "the path is not accessible: fix its permissions or choose another path",
        errno.EPERM: "the operation is not permitted on that path",
        errno.EROFS: "the file system is read-only: choose another path",
        errno.ENOENT: "check the path",
        errno.ENOTDIR: "a parent of the path is a file, not a directory",
        errno.EISDIR: "the path is a directory; a file was expected",
    }
    reason = os.strerror(exc.errno) if exc.errno else (str(exc) or type(exc).__name__)
    where = f" {exc.filename}" if getattr(exc, "filename", None) else ""
    return Ms2Error(f"I/O error on{where or ' a file'}: {reason}", hint=hints.get(exc.errno, "check the path and its storage"))


def _internal_error(exc: BaseException) -> int:
    """Not a user error: a one-paragraph message, the traceback in a file (or on stderr with
    MS2FLOW_TRACEBACK=1), exit 70 (EX_SOFTWARE)."""
    import os
    import tempfile
    import time
    import traceback

    text = "".join(traceback.format_exception(exc))
    if os.environ.get("MS2FLOW_TRACEBACK") == "1":
        sys.stderr.write(text)
        return 70
    path = None
    try:
        fd, path = tempfile.mkstemp(prefix=f"ms2flow-crash-{time.strftime('%Y%m%dT%H%M%S')}-", suffix=".txt")
        with os.fdopen(fd, "w") as f:
            f.write(" ".join(sys.argv) + "\n\n" + text)
    except OSError:
        path = None
    _print_error(f"internal error: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}".rstrip(": "),
                 (f"the traceback is in {path}; " if path else "") + "rerun with MS2FLOW_TRACEBACK=1 to print it, "
                 "and please report it with the command you ran")
    return 70


def main() -> None:
    """Entry point: every failure ends in a one-paragraph message and a non-zero exit, never a traceback."""
    try:
        app()
    except Ms2Error as exc:
        _print_error(exc.message, exc.hint)
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        _print_error("interrupted", "outputs are written atomically; rerun the same command to resume")
        sys.exit(130)
    except OSError as exc:
        err = _storage_error(exc)
        _print_error(err.message, err.hint)
        sys.exit(err.exit_code)
    except Exception as exc:  # noqa: BLE001 - the last line of defence
        sys.exit(_internal_error(exc))


if __name__ == "__main__":
    main()
