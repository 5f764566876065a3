"""benchmarks/pickcube_dapg_vs_ppo.py end to end on the fake backend (the real study is slow and not in CI)."""

import pytest
import torch

from tests.flows.conftest import build_fake_dataset

torch.set_num_threads(1)


def test_dapg_vs_ppo_benchmark_writes_curves_per_seed_and_a_summary(tmp_path, monkeypatch, capsys):
    import benchmarks._common
    from benchmarks.pickcube_dapg_vs_ppo import main

    monkeypatch.setenv("MS2FLOW_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setattr(benchmarks._common, "RESULTS_DIR", tmp_path / "results")
    store = build_fake_dataset("state", num_episodes=3)
    out = main(["--dataset", store, "--env-steps", "400", "--seeds", "0", "1", "--eval-every", "200",
                "--eval-episodes", "2", "--num-envs", "2", "--num-procs", "0", "--rollout-steps", "200",
                "--set", "rollout.env.backend=fake", "--set", "rollout.env.max_episode_steps=20",
                "--set", "dapg.bc_pretrain_steps=20", "--set", "net.init_log_std=-1.5"])
    assert out["complete"] and (tmp_path / "results" / "pickcube_dapg_vs_ppo.json").exists()
    assert [(r["algo"], r["seed"]) for r in out["runs"]] == [("ppo", 0), ("dapg", 0), ("ppo", 1), ("dapg", 1)]
    for run in out["runs"]:
        assert run["env_steps"] == 400 and [p["env_steps"] for p in run["curve"]] == [0, 200, 400]
        assert all(0.0 <= p["success_rate"] <= 1.0 and "mean_return" in p for p in run["curve"])
    assert set(out["summary"]) == {"ppo", "dapg", "dapg_minus_ppo_final_success"}
    assert out["summary"]["dapg"]["seeds"] == 2
    assert "DAPG - PPO final success" in capsys.readouterr().out


def test_missing_dataset_is_refused(tmp_path):
    from benchmarks.pickcube_dapg_vs_ppo import main

    with pytest.raises(SystemExit):
        main(["--dataset", str(tmp_path / "nope.zarr")])


def test_different_networks_are_refused(tmp_path, capsys):
    """PPO's config explores with init_log_std -0.5, DAPG's with -1.5: comparing them as they are is unfair."""
    from benchmarks.pickcube_dapg_vs_ppo import main

    store = tmp_path / "demos.zarr"
    store.mkdir()
    with pytest.raises(SystemExit):
        main(["--dataset", str(store), "--env-steps", "400"])
    assert "net.init_log_std = -0.5 (ppo) vs -1.5 (dapg)" in capsys.readouterr().err
