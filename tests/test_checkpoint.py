"""Checkpoints: atomic writes, everything needed to resume, bad files, and resume exactness of BC on CPU."""

import os
import random

import numpy as np
import pytest
import torch

from ms2core.algos import bc
from ms2core.checkpoint import load_checkpoint, save_checkpoint
from ms2core.errors import CheckpointError
from storage_schemas.training import BCConfig
from tests.zarr_fixtures import write_fake_expert_dataset


def tiny_model():
    torch.manual_seed(0)
    return torch.nn.Linear(3, 2)


def test_checkpoint_holds_model_optimizer_step_rng_sampler_config(tmp_path):
    model = tiny_model()
    opt = torch.optim.Adam(model.parameters())
    model(torch.ones(1, 3)).sum().backward()
    opt.step()
    random.seed(1), np.random.seed(2), torch.manual_seed(3)
    path = save_checkpoint(tmp_path / "c.pt", model=model, optimizer=opt, step=7, config={"a": 1},
                           sampler={"next_batch": 7})
    expected = (random.random(), np.random.rand(), torch.rand(1).item())
    ckpt = load_checkpoint(path)
    assert ckpt["updates"] == 7 and ckpt["config"] == {"a": 1} and ckpt["sampler"] == {"next_batch": 7}
    assert ckpt["format"] == "ms2flow.checkpoint" and ckpt["algo"] == "bc" and ckpt["env_steps"] is None
    assert ckpt["optimizer"]["state"]  # Adam moments saved
    torch.testing.assert_close(ckpt["model"]["weight"], model.weight.detach())
    from ms2core.checkpoint import restore_rng_states

    restore_rng_states(ckpt["rng"])
    assert (random.random(), np.random.rand(), torch.rand(1).item()) == expected


def test_write_is_atomic_a_failed_save_keeps_the_old_file(tmp_path, monkeypatch):
    model = tiny_model()
    path = save_checkpoint(tmp_path / "c.pt", model=model, optimizer=None, step=1, config={})
    before = path.read_bytes()

    def exploding_save(obj, f):
        f.write(b"partial")
        raise KeyboardInterrupt  # killed mid-write

    monkeypatch.setattr(torch, "save", exploding_save)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(path, model=model, optimizer=None, step=2, config={})
    assert path.read_bytes() == before
    assert sorted(os.listdir(tmp_path)) == ["c.pt"]  # no temporary left behind


def test_bad_checkpoint_files(tmp_path):
    with pytest.raises(CheckpointError, match="does not exist"):
        load_checkpoint(tmp_path / "missing.pt")
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="not readable"):
        load_checkpoint(tmp_path / "junk.pt")
    torch.save({"hello": 1}, tmp_path / "other.pt")
    with pytest.raises(CheckpointError, match="not an ms2flow checkpoint"):
        load_checkpoint(tmp_path / "other.pt")


def bc_config(tmp_path, dataset, steps, name, **train):
    return BCConfig.model_validate(dict(
        env=dict(backend="fake"), dataset=dict(paths=[str(dataset)], prefetch_batches=2),
        net=dict(hidden_sizes=[32, 32]),
        train={**dict(num_steps=steps, batch_size=16, lr=1e-3, log_every_steps=5, checkpoint_every_steps=10), **train},
        run=dict(device="cpu", torch_threads=1, run_dir=str(tmp_path / name)),
    ))


class Killed(Exception):
    pass


def test_killed_and_resumed_run_matches_uninterrupted_losses_exactly(tmp_path, monkeypatch):
    dataset = write_fake_expert_dataset(tmp_path / "d.zarr", num_episodes=20)
    full = bc.train(bc_config(tmp_path, dataset, 40, "full"), progress=False)
    assert len(full.losses) == 40

    # Same run, killed after 27 updates (the last checkpoint is at step 20).
    real_update_fn = bc.make_update_fn

    def dying_update_fn(*args, **kwargs):
        update = real_update_fn(*args, **kwargs)
        calls = {"n": 0}

        def wrapped(batch):
            calls["n"] += 1
            if calls["n"] > 27:
                raise Killed
            return update(batch)

        return wrapped

    monkeypatch.setattr(bc, "make_update_fn", dying_update_fn)
    cfg = bc_config(tmp_path, dataset, 40, "killed")
    with pytest.raises(Killed):
        bc.train(cfg, progress=False)
    monkeypatch.setattr(bc, "make_update_fn", real_update_fn)
    ckpt_dir = tmp_path / "killed" / "checkpoints"
    assert sorted(p.name for p in ckpt_dir.iterdir()) == ["ckpt_00000010.pt", "ckpt_00000020.pt"]

    # Perturb every global RNG: the checkpoint must restore them.
    random.seed(99), np.random.seed(99), torch.manual_seed(99)
    resumed = bc.train(cfg, resume_from=ckpt_dir / "ckpt_00000020.pt", progress=False)
    assert resumed.start_update == 20 and resumed.updates == 40
    assert resumed.losses == full.losses[20:]  # exact, not approximately
    final_full = load_checkpoint(full.final_checkpoint)["model"]
    final_resumed = load_checkpoint(resumed.final_checkpoint)["model"]
    for key in final_full:
        assert torch.equal(final_full[key], final_resumed[key])
    # metrics.jsonl: the killed run's lines after step 20 were replaced, none duplicated
    import json

    steps = [json.loads(line)["step"] for line in (tmp_path / "killed" / "metrics.jsonl").read_text().splitlines()]
    assert steps == list(range(5, 41, 5))


def test_resume_with_a_different_config_is_refused(tmp_path):
    dataset = write_fake_expert_dataset(tmp_path / "d.zarr", num_episodes=5)
    first = bc.train(bc_config(tmp_path, dataset, 10, "a"), progress=False)
    other = bc_config(tmp_path, dataset, 20, "a", lr=5e-4)
    with pytest.raises(CheckpointError, match="different config"):
        bc.train(other, resume_from=first.final_checkpoint, progress=False)
