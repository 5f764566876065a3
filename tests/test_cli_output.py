"""Command output that does not depend on luck: lines are never hard-wrapped when stdout is not a terminal
(a long temporary path must not split a message), and tables fit an 80-column terminal with every path whole,
broken only after a '/' (flows/commands/_output.py; issue 17 item 9, issue 18 item 4)."""

from __future__ import annotations

import io
import re

import pytest
from rich.console import Console
from typer.testing import CliRunner

from flows.commands._output import console, fit_path, fit_text, shown_path

BOX = "│┃┆┊║|─━┄┈═┌┐└┘├┤┬┴┼╭╮╯╰┏┓┗┛┡┩╇╈┳┻╋╞╡╪"


def rendered(table, width: int = 80) -> str:
    out = Console(width=width, record=True, file=io.StringIO(), color_system=None)
    out.print(table)
    return out.export_text()


def squeezed(text: str) -> str:
    """The text without borders and whitespace."""
    return re.sub(rf"[\s{BOX}]", "", text)


def columns_read_back(text: str) -> list[str]:
    """Each table column's lines joined again: a line break right after a '/' or '.' (where fit_path breaks)
    joins without a space, any other as a space; so a path cut anywhere else is not found whole."""
    cells: dict[int, list[str]] = {}
    for line in text.splitlines():
        if "│" in line:
            for i, cell in enumerate(line.split("│")):
                cells.setdefault(i, []).append(cell.strip())
    joined = []
    for pieces in cells.values():
        out = ""
        for piece in pieces:
            out += piece if out.endswith(("/", ".")) or not out else " " + piece
        joined.append(out)
    return joined


def assert_fits_with_paths_whole(text: str, paths: list[str], width: int = 80) -> None:
    assert "…" not in text and "..." not in text, text  # nothing cut
    assert max(len(line) for line in text.splitlines()) <= width, text
    columns = columns_read_back(text)
    for path in paths:
        assert any(path in column for column in columns), (path, text)


def test_fit_path_breaks_only_after_slashes_and_dots():
    path = "/home/someone/ms2data/datasets/PickCube-v0/mplib.s0.n100.none.pd_ee_delta_pose.pointcloud.371cb8a9c549.zarr"
    lines = fit_path(path, 30).split("\n")
    assert "".join(lines) == path and max(map(len, lines)) <= 30
    assert all(line.endswith(("/", ".")) for line in lines[:-1])
    assert fit_path("short/path", 30) == "short/path"
    assert fit_text(f"wrote {path} ok", 30).replace("\n", "") == f"wrote {path} ok"


def test_paths_are_shown_relative_to_the_data_directory(tmp_path):
    assert shown_path(tmp_path / "datasets" / "a.zarr", tmp_path) == "datasets/a.zarr"
    assert shown_path("/elsewhere/a.zarr", tmp_path) == "/elsewhere/a.zarr"
    assert shown_path("s3://bucket/a.zarr", tmp_path) == "s3://bucket/a.zarr"


def test_printed_lines_are_not_hard_wrapped_off_a_terminal():
    out = io.StringIO()
    long_path = "/tmp/" + "/".join(["a-rather-long-directory-name"] * 8) + "/data.zarr"
    console_ = console()
    console_.file = out
    console_.print(f"[green]wrote[/green] {long_path}: 3 episodes, 40 transitions")
    assert f"wrote {long_path}: 3 episodes, 40 transitions\n" == out.getvalue()


@pytest.fixture
def long_data_dir(tmp_path, monkeypatch):
    root = tmp_path / "a-data-directory-with-a-long-name" / "nested" / "ms2data"
    monkeypatch.setenv("MS2FLOW_DATA_DIR", str(root))
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{root / 'mlflow.db'}")
    return root


def test_quickstart_summary_fits_80_columns_with_whole_paths(long_data_dir):
    from flows.commands.pipeline import quickstart_table
    from storage_schemas.quickstart import QuickstartSummary

    dataset = long_data_dir / "datasets/PickCube-v0/mplib.s0.n100.none.pd_joint_pos.state.371cb8a9c549.zarr"
    checkpoint = long_data_dir / "runs/bc/PickCube-v0/default/20261201-104213-152450/checkpoints/final.pt"
    summary = QuickstartSummary(env_id="PickCube-v0", dataset=str(dataset), n_episodes=100, n_rows=8000,
                                validation_status="passed", run_id="900852f4ae5f4c3594c7d5293396bf48",
                                run_dir=str(checkpoint.parent.parent), checkpoint=str(checkpoint), success_rate=0.4,
                                model_name="ms2-PickCube-v0-bc", model_version="3", wall_s=420.0)
    text = rendered(quickstart_table(summary, 80))
    assert_fits_with_paths_whole(text, [
        "datasets/PickCube-v0/mplib.s0.n100.none.pd_joint_pos.state.371cb8a9c549.zarr",
        "runs/bc/PickCube-v0/default/20261201-104213-152450/checkpoints/final.pt",
        str(long_data_dir), f"sqlite:///{long_data_dir / 'mlflow.db'}", "models:/ms2-PickCube-v0-bc/3"])
    assert str(dataset) not in squeezed(text)  # shown relative to the data directory


def test_validate_findings_table_fits_80_columns_with_whole_paths(tmp_path):
    from flows.commands.validate import findings_table
    from storage_schemas.validation import Finding, ValidationReport

    missing = "/srv/ms2flow/ms2data/demos/PickCube-v0/mplib.s0.n100.none.pd_ee_delta_pose.h5"
    report = ValidationReport(
        path=str(tmp_path / "d.zarr"), kind="zarr", fingerprint="x", status="failed", n_errors=2, n_warnings=1,
        validated_at="2026-12-01T10:00:00Z", findings=[
            Finding(code="provenance_missing", severity="warning", key="source.path", value=missing,
                    message=f"the source demo pair {missing} does not exist (moved or deleted)"),
            Finding(code="action_bounds", severity="error", episode=2, key="actions", index=2, row=5, value=5.0,
                    expected=[-1.0, 1.0], message="action component 0 = 5 outside the control mode's bounds"),
            Finding(code="missing_chunk", severity="error", key="data/obs/xyz", value="data/obs/xyz/c/12/0/0",
                    message="a chunk listed in the inventory is missing: data/obs/xyz/c/12/0/0"),
        ])
    text = rendered(findings_table(report, 50, 80))
    assert_fits_with_paths_whole(text, [missing, "data/obs/xyz/c/12/0/0"])
    assert "provenance_missing" in text and "action_bounds" in text  # codes never split
    assert any("episode 2, actions, step 2" in column for column in columns_read_back(text))


def test_validate_command_output_keeps_paths_whole_off_a_terminal(tmp_path):
    """The CLI's own lines (report path) are not hard-wrapped however long the temporary directory is."""
    from flows.cli import app
    from tests.validate_fixtures import build

    deep = tmp_path / ("x" * 60) / ("y" * 60)
    built = build(deep, "state")
    result = CliRunner().invoke(app, ["validate", str(built.store), "--no-progress"])
    report = built.store.parent / (built.store.name[: -len(".zarr")] + ".validation.json")
    assert f"report: {report}\n" in result.output, result.output
