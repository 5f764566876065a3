"""``ms2 runtime pack|unpack``: the relocatable simulator runtime (CPython 3.11 + SAPIEN) for hosts whose
Python cannot install SAPIEN 2.2 (see ms2core/runtime.py for the tree and the parts)."""

from __future__ import annotations

from pathlib import Path

import typer

runtime_app = typer.Typer(help="Pack / unpack the relocatable simulator runtime (CPython 3.11 + SAPIEN).",
                          no_args_is_help=True)


def register(app: typer.Typer) -> None:
    app.add_typer(runtime_app, name="runtime")


@runtime_app.command("pack")
def pack(
    out: Path = typer.Option(Path("ms2data/runtime"), "--out", "-o", help="folder for the parts and manifest"),
    part_size_mib: float = typer.Option(60.0, "--part-size", help="largest part in MiB (60: a part fits a 64 MiB transfer)"),
    level: int = typer.Option(3, "--level", min=0, max=9, help="xz preset (6-9: a little smaller, much slower)"),
    python_prefix: Path = typer.Option(None, "--python-prefix",
                                       help="CPython 3.11 to carry (default: this interpreter's base prefix)"),
    site_packages: Path = typer.Option(None, "--site-packages", help="where the packages come from (default: this venv)"),
    only: list[str] = typer.Option(None, "--only", help="pack only these distributions (repeatable; for tests)"),
    no_interpreter: bool = typer.Option(False, "--no-interpreter", help="leave the interpreter out (for tests)"),
    overwrite: bool = typer.Option(False, "--overwrite"),
) -> None:
    """Build the runtime from the project's pins: interpreter, simulator packages, ms2flow's code; no torch,
    prefect or mlflow. Writes xz parts of at most --part-size plus runtime-manifest.json."""
    from rich.console import Console

    from ms2core.runtime import RUNTIME_DISTRIBUTIONS, PackConfig
    from ms2core.runtime import pack as pack_runtime

    console = Console()
    cfg = PackConfig(out_dir=out, site_packages=site_packages, python_prefix=python_prefix,
                     distributions=tuple(only) if only else RUNTIME_DISTRIBUTIONS,
                     include_interpreter=not no_interpreter, part_size=int(part_size_mib * 2**20),
                     level=level, overwrite=overwrite)
    with console.status(f"packing {len(cfg.distributions)} distributions (xz -{level}) ..."):
        result = pack_runtime(cfg)
    mib = 2**20
    console.print(f"packed {result.tree_files} files ({result.tree_bytes / mib:.0f} MiB) into "
                  f"{len(result.parts)} part(s), {result.archive_bytes / mib:.1f} MiB in all, in "
                  f"{result.seconds:.0f} s: {result.out_dir}")
    for part in result.parts:
        console.print(f"  {part['name']}  {part['nbytes'] / mib:6.1f} MiB  sha256 {part['sha256']}")
    console.print(f"unpack on the target: ms2 runtime unpack {result.out_dir} --prefix PREFIX "
                  f"(or: python3 -m ms2core.runtime unpack ... from a checkout)")


@runtime_app.command("unpack")
def unpack(
    parts_dir: Path = typer.Argument(..., help="folder with runtime-manifest.json and the parts"),
    prefix: Path = typer.Option(..., "--prefix", "-p", help="where the runtime tree goes"),
    overwrite: bool = typer.Option(False, "--overwrite"),
    compile_bytecode: bool = typer.Option(True, "--compile/--no-compile", help="compile bytecode after installing"),
) -> None:
    """Verify every part (sha256), the platform and every file, then install the runtime at PREFIX."""
    from rich.console import Console

    from ms2core.runtime import unpack as unpack_runtime

    console = Console()
    with console.status(f"verifying and unpacking {parts_dir} ..."):
        manifest = unpack_runtime(parts_dir, prefix, overwrite=overwrite, compile_bytecode=compile_bytecode)
    console.print(f"unpacked the simulator runtime (python {manifest['python']}, "
                  f"{len(manifest['distributions'])} distributions) at {prefix}")
    if manifest["interpreter"]["included"]:
        console.print(f"  interpreter: {prefix / 'bin' / 'python'}  (point sim_python / MS2FLOW_SIM_PYTHON here)")
        console.print(f"  check it:    {prefix / 'bin' / 'ms2-sim'} doctor")
