"""The CLI's last line of defence (flows.cli.main): whatever escapes a command ends in a one-paragraph
message and a non-zero exit, never a Python traceback, and messages are not hard-wrapped in logs."""

from __future__ import annotations

import errno
import sys

import pytest

from ms2core.errors import DatasetError


def run_main(monkeypatch, capsys, argv: list[str], raises: BaseException):
    from flows import cli
    import pipelines.validate

    def boom(cfg):
        raise raises

    monkeypatch.setattr(pipelines.validate, "run", boom)
    monkeypatch.setattr(sys, "argv", ["ms2", *argv])
    with pytest.raises(SystemExit) as exit_info:
        cli.main()
    captured = capsys.readouterr()
    return exit_info.value.code, captured.out + captured.err


def test_disk_full_is_a_message(monkeypatch, capsys, tmp_path):
    exc = OSError(errno.ENOSPC, "No space left on device", str(tmp_path / "out.h5"))
    code, out = run_main(monkeypatch, capsys, ["validate", str(tmp_path / "x.zarr")], exc)
    assert code == 2
    assert "Traceback" not in out
    assert "No space left on device" in out and "out.h5" in out and "disk is full" in out


def test_unexpected_exception_is_internal_error_with_traceback_file(monkeypatch, capsys, tmp_path):
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    import tempfile

    monkeypatch.setattr(tempfile, "tempdir", None)
    code, out = run_main(monkeypatch, capsys, ["validate", str(tmp_path / "x.zarr")], KeyError("traj_3"))
    assert code == 70
    assert "Traceback" not in out
    assert "internal error: KeyError" in out
    crash = list(tmp_path.glob("ms2flow-crash-*.txt"))
    assert len(crash) == 1 and "Traceback" in crash[0].read_text() and "traj_3" in crash[0].read_text()


def test_long_messages_are_not_wrapped(monkeypatch, capsys, tmp_path):
    long_path = tmp_path / ("a-very-long-directory-name-" * 4) / "dataset.zarr"
    code, out = run_main(monkeypatch, capsys, ["validate", str(long_path)],
                         DatasetError(f"no Zarr dataset at {long_path} does not exist", hint="render one"))
    assert code == 2
    assert f"{long_path} does not exist" in out  # one line, not split at column 80
