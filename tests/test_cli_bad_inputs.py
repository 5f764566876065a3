"""Every ``ms2`` sub-command against bad input: a non-zero exit, a short message (an ``error:`` line and at
most a hint), no Python traceback, and no output left behind.

The commands run through ``flows.cli.main`` (the real entry point, with its last line of defence) in
this process, inside a fresh data directory; the files under the test's directory are compared before
and after each command, so a partial output (a temp file, an empty store, a half-written pair) fails.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

BAD_H5_BYTES = b"\x89HDF\r\n\x1a\n" + b"\x00garbage" * 64  # an HDF5 signature followed by junk


def files_under(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()}


@pytest.fixture
def sandbox(tmp_path, monkeypatch):
    """A data directory and a few bad inputs: a missing path, a corrupt pair, a config with a typo."""
    data = tmp_path / "ms2data"
    monkeypatch.setenv("MS2FLOW_DATA_DIR", str(data))
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    monkeypatch.delenv("PREFECT_API_URL", raising=False)
    monkeypatch.chdir(tmp_path)
    corrupt = tmp_path / "in" / "corrupt.h5"
    corrupt.parent.mkdir()
    corrupt.write_bytes(BAD_H5_BYTES)
    corrupt.with_suffix(".json").write_text('{"env_info": {"env_id": "PickCube-v0"}, "episodes": [')
    (tmp_path / "in" / "typo.yaml").write_text("no_such_key: 1\n")
    (tmp_path / "in" / "not_yaml.yaml").write_text("a: [1, 2\n")
    (tmp_path / "in" / "bogus.pt").write_bytes(b"not a checkpoint")
    (tmp_path / "in" / "fake.zarr").mkdir()
    (tmp_path / "in" / "fake.zarr" / "zarr.json").write_text("{broken")
    from tests.demo_fixtures import fake_demo_pair

    fake_demo_pair(tmp_path / "in" / "good", n_episodes=2)  # a sound pair (the real writer) for bad options
    return tmp_path


MISSING = "in/absent.h5"
CORRUPT = "in/corrupt.h5"
TYPO = "in/typo.yaml"
GOOD = "in/good.h5"

#: (id, argv). Each must exit non-zero with a message; none may leave files behind.
CASES: list[tuple[str, list[str]]] = [
    # demos
    ("generate-unknown-env", ["demos", "generate", "--env-id", "PickCub-v0", "-n", "1"]),
    ("generate-config-typo", ["demos", "generate", "-c", TYPO]),
    ("generate-bad-set", ["demos", "generate", "--set", "num_episodes=-3"]),
    ("import-missing", ["demos", "import", MISSING]),
    ("import-corrupt", ["demos", "import", CORRUPT]),
    ("merge-missing", ["demos", "merge", MISSING, MISSING, "-o", "out/merged"]),
    ("merge-corrupt", ["demos", "merge", CORRUPT, CORRUPT, "-o", "out/merged"]),
    # replay
    ("replay-missing", ["replay", MISSING, "-t", "pd_ee_delta_pose"]),
    ("replay-corrupt", ["replay", CORRUPT, "-t", "pd_ee_delta_pose", "-o", "out/replayed"]),
    ("replay-unknown-target-mode", ["replay", GOOD, "-t", "pd_ee_delta_poze", "--set", "backend=fake"]),
    ("replay-unconvertible-mode", ["replay", GOOD, "-t", "pd_joint_vel", "--set", "backend=fake"]),
    # render
    ("render-unknown-obs-mode", ["render", GOOD, "--obs-mode", "pointclod", "--set", "options.backend=fake"]),
    ("render-bad-option-value", ["render", GOOD, "--obs-mode", "pointcloud", "--set", "options.obs.n_points=-5",
                                 "--set", "options.backend=fake"]),
    ("render-missing", ["render", MISSING, "--obs-mode", "state"]),
    ("render-corrupt", ["render", CORRUPT, "--obs-mode", "state", "--output-dir", "out"]),
    ("render-config-typo", ["render", CORRUPT, "-c", TYPO]),
    ("render-bad-yaml", ["render", CORRUPT, "-c", "in/not_yaml.yaml"]),
    ("render-unknown-set-key", ["render", CORRUPT, "--set", "options.n_pointz=3"]),
    # validate (exit 1 is its "failed" verdict: a table of findings, so only "no traceback" is checked)
    ("validate-missing", ["validate", MISSING]),
    ("validate-missing-zarr", ["validate", "in/absent.zarr"]),
    # train
    *[(f"train-{algo}-config-missing", ["train", algo, "-c", "in/absent.yaml"]) for algo in
      ("bc", "ppo", "dapg", "sac", "gail")],
    *[(f"train-{algo}-config-typo", ["train", algo, "-c", TYPO]) for algo in ("bc", "ppo", "dapg", "sac", "gail")],
    ("train-bc-unknown-set-key", ["train", "bc", "--set", "no_such.key=1"]),
    ("train-bc-missing-dataset", ["train", "bc", "--set", "dataset.paths=[in/absent.zarr]"]),
    ("train-bc-broken-dataset", ["train", "bc", "--set", "dataset.paths=[in/fake.zarr]"]),
    ("train-bc-resume-bogus", ["train", "bc", "--resume-from", "in/bogus.pt"]),
    # evaluate / export
    ("evaluate-missing-checkpoint", ["evaluate", "--checkpoint", "in/absent.pt"]),
    ("evaluate-bogus-checkpoint", ["evaluate", "--checkpoint", "in/bogus.pt", "--num", "1"]),
    ("export-h5-missing", ["export-h5", "in/absent.zarr", "out/x.h5"]),
    ("export-h5-broken", ["export-h5", "in/fake.zarr", "out/x.h5"]),
    ("export-policy-missing", ["export-policy", "in/absent.pt", "--out", "out/pkg"]),
    ("export-policy-bogus", ["export-policy", "in/bogus.pt", "--out", "out/pkg"]),
    # flows through the CLI
    ("run-unknown-flow", ["run", "train-bcc"]),
    ("run-config-typo", ["run", "train-bc", "-c", TYPO]),
    ("quickstart-unknown-set-key", ["quickstart", "--set", "num_demoz=3"]),
    ("quickstart-bad-value", ["quickstart", "--set", "num_demos=0"]),
]


def run_cli(monkeypatch, capsys, argv: list[str]) -> tuple[int, str]:
    from flows import cli

    monkeypatch.setattr(sys, "argv", ["ms2", *argv])
    code = 0
    try:
        cli.main()
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    captured = capsys.readouterr()
    return code, captured.out + captured.err


@pytest.mark.parametrize("argv", [argv for _, argv in CASES], ids=[name for name, _ in CASES])
def test_bad_input_is_a_message_not_a_traceback(sandbox, monkeypatch, capsys, argv):
    before = files_under(sandbox)
    code, out = run_cli(monkeypatch, capsys, argv)
    assert code != 0, f"exit 0 for bad input {argv}:\n{out}"
    assert "Traceback" not in out, out
    assert code != 70, f"an internal error, not a user error:\n{out}"
    if argv[0] != "validate":
        assert "error" in out.lower(), out
        lines = [line for line in out.strip().splitlines() if line.strip()]
        assert len(lines) <= 12, f"not one paragraph ({len(lines)} lines):\n{out}"
    left = files_under(sandbox) - before
    left = {p for p in left if not p.startswith("ms2data/prefect")}  # Prefect's own home (ms2 run)
    assert not left, f"{argv} left {sorted(left)}"
