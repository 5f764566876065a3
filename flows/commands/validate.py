"""``ms2 validate PATH``: check a rendered Zarr dataset or a demo pair, print the findings as a table,
write the report beside the dataset and record the result in the store. Exit 1 on any error."""

from __future__ import annotations

from pathlib import Path

import typer


def register(app: typer.Typer) -> None:
    @app.command("validate")
    def validate(
        ctx: typer.Context,
        path: str = typer.Argument(..., help="Zarr store (dir or s3://...) or demo pair NAME.h5 / NAME.json"),
        replay_sample: int = typer.Option(0, "--replay-sample", "-k", min=0,
                                          help="re-simulate this many episodes and compare states and success"),
        workers: int = typer.Option(0, "--workers", min=0, help="Dask LocalCluster workers (0: in this process)"),
        scheduler: str = typer.Option(None, "--scheduler", help="existing Dask scheduler address"),
        backend: str = typer.Option("auto", "--backend", help="env backend for bounds and replay: auto|sapien|fake"),
        success_only: bool = typer.Option(True, "--success-only/--any-outcome",
                                          help="every episode must end in success"),
        recheck: bool = typer.Option(False, "--recheck", help="validate again even if nothing changed"),
        config: Path = typer.Option(None, "--config", "-c", help="YAML ValidationConfig"),
        overrides: list[str] = typer.Option(None, "--set", help="dotted override, e.g. replay_state_atol=1e-4"),
        max_rows: int = typer.Option(50, "--max-rows", help="findings shown in the table (all are in the report)"),
        progress: bool = typer.Option(True, "--progress/--no-progress"),
    ) -> None:
        """Validate a dataset: schemas, shapes/dtypes, episode ends, ids, NaN/Inf, action bounds, images and
        point clouds, success flags, duplicates, provenance, and replay of a sample of episodes."""
        from flows.commands._output import console as make_console
        from pipelines.validate import run

        cfg = build_config(ctx, path, config, overrides)
        result = run(cfg)
        print_report(make_console(), result, max_rows)
        if result.report.n_errors:
            raise typer.Exit(1)


VALIDATE_FIELDS = {name: name for name in ("replay_sample", "workers", "scheduler", "backend", "success_only",
                                           "recheck", "progress")}


def build_config(ctx: typer.Context, path: str, config: Path | None, overrides: list[str] | None):
    """The command's ValidationConfig: option defaults < YAML < options given < --set (flows.commands._options)."""
    from flows.commands._options import config_from_cli
    from storage_schemas.validation import ValidationConfig

    return config_from_cli(ctx, ValidationConfig, config, overrides, VALIDATE_FIELDS, fixed={"path": path})


#: Fixed columns of the findings table: (header, width); the last column ("finding") takes the rest.
FINDING_COLUMNS = (("code", 22), ("severity", 8), ("where", 16))


def findings_table(report, max_rows: int, width: int):
    """The findings as a table that fits ``width`` columns (80 in a plain terminal): code and severity never
    wrap (greppable), the message with its value and expectation wraps at spaces, and a path in it breaks
    only after a '/' (fit_text): nothing is cut."""
    from rich.table import Table

    from flows.commands._output import fit_text, value_width

    code_width = max([len(f.code) for f in report.findings[:max_rows]] + [len("code")])
    widths = [code_width, FINDING_COLUMNS[1][1], FINDING_COLUMNS[2][1]]
    text_width = value_width(width, widths)
    table = Table(show_lines=False)
    table.add_column("code", no_wrap=True, min_width=code_width)
    table.add_column("severity", no_wrap=True, min_width=widths[1])
    table.add_column("where", overflow="fold", max_width=widths[2])
    table.add_column("finding", overflow="fold", max_width=text_width)
    for f in report.findings[:max_rows]:
        colour = "red" if f.severity == "error" else "yellow"
        where = ", ".join(p for p in (_part("episode", f.episode), _part("", f.key), _part("step", f.index)) if p)
        text = f.message + "".join(f"\n{name}: {_cell(value)}" for name, value in
                                   (("value", f.value), ("expected", f.expected)) if value is not None)
        table.add_row(f.code, f"[{colour}]{f.severity}[/{colour}]", fit_text(where, widths[2]),
                      "\n".join(fit_text(line, text_width) for line in text.split("\n")))
    return table


def print_report(console, result, max_rows: int = 50) -> None:
    report = result.report
    if report.findings:
        console.print(f"validation of {report.path}", highlight=False)
        console.print(findings_table(report, max_rows, console.width))
    hidden = sum(c.count for c in report.counts) - min(len(report.findings), max_rows)
    if hidden > 0:
        console.print(f"... {hidden} more finding(s): counts per code below, listed ones in the report")
    if report.counts:
        counts = ", ".join(f"{c.code}={c.count}" for c in report.counts)
        console.print(f"counts: {counts}")
    colour = "green" if report.status == "passed" else "red"
    reused = " (unchanged since the last validation)" if result.reused else ""
    console.print(f"[{colour}]{report.status}[/{colour}]{reused}: {report.n_errors} error(s), "
                  f"{report.n_warnings} warning(s); {report.n_episodes} episodes, {report.n_rows} rows, "
                  f"{report.bytes_checked / 2**20:.1f} MiB checked in {report.elapsed_s:.1f} s"
                  + (f"; replayed episodes {report.replayed_episodes}" if report.replayed_episodes else ""))
    if result.report_path:
        console.print(f"report: {result.report_path}", highlight=False)


def _part(name: str, value) -> str:
    if value is None:
        return ""
    return f"{name} {value}" if name else str(value)


def _cell(value) -> str:
    """A finding's value: text whole (it may be a path), other values cut at 60 characters (arrays)."""
    if isinstance(value, str):
        return value
    text = str(value)
    return text if len(text) <= 60 else text[:57] + "..."
