"""Behaviour cloning from Zarr demo datasets, whole: loss, update step, training loop with exact resume.

    ms2 train bc --config configs/bc/pickcube_state.yaml [--set train.num_steps=1000] [--resume-from ckpt.pt]

The loss is MSE between the policy's action and the demo action for a
deterministic head (ManiSkill2-Learn's BC), or the negative log-likelihood of
the demo action for a Gaussian head. Batch ``k`` depends only on (seed, k), and
checkpoints hold model, optimizer, step, RNG states (python, numpy, torch,
CUDA) and the sampler position, so a run killed and resumed reproduces the
uninterrupted run's losses exactly on CPU.
"""

from __future__ import annotations

import contextlib
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ms2core.algos import run_dir_for
from ms2core.algos import distributed
from ms2core.algos._common import setup_torch
from ms2core.algos.distributed import Learners
from ms2core.algos._checks import (
    assert_finite_loss,
    assert_finite_parameters,
    first_nonfinite,
    with_last_checkpoint,
)
from ms2core.checkpoint import checkpoint_name, load_checkpoint, restore_rng_states, save_checkpoint
from ms2core.config import dump_config
from ms2core.data import BatchStream, DemoBatch, DemoDataset
from ms2core.errors import CheckpointError, ConfigError, TrainingDivergedError
from ms2core.fileio import disk_full_error, is_disk_full, write_atomic
from ms2core.metrics import MetricsSink
from ms2core.nn import Policy, build_policy
from ms2core.nn.heads import ActionDist
from storage_schemas.training import BCConfig, TrainResult

log = logging.getLogger(__name__)

FINAL_CHECKPOINT = "final.pt"


@dataclass
class BCLoss:
    loss: torch.Tensor
    action_mse: torch.Tensor


def bc_loss(policy: Policy, batch: DemoBatch, action_weights: torch.Tensor | None = None) -> BCLoss:
    """Pure: the BC loss of ``policy`` on ``batch`` (no optimizer, no side effects).

    ``action_weights`` (A,) scale each dimension's squared error for a deterministic head (see
    ``action_loss_weights``); ``action_mse`` is always the plain, unweighted MSE.
    """
    out = policy(batch.obs)
    target = batch.actions.to(torch.float32)
    if isinstance(out, ActionDist):
        mse = ((out.mode().float() - target) ** 2).mean()
        return BCLoss(-out.log_prob(target).mean(), mse.detach())
    squared = (out.float() - target) ** 2
    mse = squared.mean()
    if action_weights is None:
        return BCLoss(mse, mse.detach())
    return BCLoss((squared * action_weights.to(squared.device)).mean(), mse.detach())


def action_loss_weights(action_std: np.ndarray, floor: float = 1e-3) -> torch.Tensor:
    """1/variance per action dimension, rescaled to mean 1 (the loss keeps its magnitude, Adam its step size)."""
    inverse_var = 1.0 / np.maximum(np.asarray(action_std, np.float64), floor) ** 2
    return torch.as_tensor(inverse_var / inverse_var.mean(), dtype=torch.float32)


def perturb_state(batch: DemoBatch, state_std: torch.Tensor, noise_std: float, shard: slice | None = None,
                  global_size: int | None = None) -> DemoBatch:
    """``batch`` with N(0, (noise_std * state_std)^2) added to obs['state'] (torch's global RNG, checkpointed).
    ``shard``: ``batch`` holds these rows of a global batch of ``global_size`` (a data-parallel learner), and
    gets those rows of the global batch's noise, the same noise one process would add."""
    if noise_std <= 0 or "state" not in batch.obs:
        return batch
    state = batch.obs["state"]
    shape = state.shape if shard is None else (global_size, *state.shape[1:])
    noise = torch.randn(shape, dtype=state.dtype, device=state.device)[shard or slice(None)]
    noisy = state + noise * state_std.to(state.dtype) * noise_std
    return DemoBatch(obs={**batch.obs, "state": noisy}, actions=batch.actions)


def make_update_fn(policy: Policy, optimizer: torch.optim.Optimizer, precision: str = "fp32",
                   grad_clip_norm: float | None = None, state_noise_std: float = 0.0,
                   action_weights: torch.Tensor | None = None, learners: Learners | None = None,
                   batch_size: int | None = None) -> Callable[[DemoBatch], torch.Tensor]:
    """One gradient step per call; returns the loss as a tensor on the training device (no host sync).

    With data-parallel ``learners`` each call gets this rank's shard of a global batch of ``batch_size``: the
    policy runs under DDP (gradients averaged over the ranks during backward) and the loss returned is the
    global batch's (the mean of the shards')."""
    device_type = next(policy.parameters()).device.type
    use_bf16 = precision == "bf16" and device_type == "cuda"
    parallel = learners is not None and learners.world_size > 1
    model = learners.wrap(policy) if parallel else policy
    shard = learners.rows(batch_size, "train.batch_size") if parallel else None

    def update(batch: DemoBatch) -> torch.Tensor:
        if state_noise_std > 0:
            batch = perturb_state(batch, policy.encoder.normalizer.std, state_noise_std, shard, batch_size)
        with torch.autocast(device_type=device_type, dtype=torch.bfloat16, enabled=use_bf16):
            loss = bc_loss(model, batch, action_weights).loss
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if grad_clip_norm is not None:
            torch.nn.utils.clip_grad_norm_(policy.parameters(), grad_clip_norm)
        optimizer.step()
        return learners.mean(loss) if parallel else loss.detach()

    return update


def default_run_dir(cfg: BCConfig) -> Path:
    return run_dir_for("bc", cfg)


def build_dataset(cfg: BCConfig, device: torch.device) -> DemoDataset:
    d = cfg.dataset
    return DemoDataset(d.paths, num_samples=d.num_samples, mode=d.mode, device=device, cache_bytes=d.cache_bytes,
                       block_rows=d.block_rows, refresh_every_batches=d.refresh_every_batches,
                       ram_limit_bytes=d.ram_limit_bytes, gpu_fraction=d.gpu_fraction, force=cfg.run.force)


def _comparable(config: dict) -> dict:
    """Config keys that must match for a resume (the step budget, logging, device and bookkeeping may change)."""
    out = BCConfig.model_validate(config).model_dump(mode="json")  # defaults filled in, as the run's own dump
    for key in ("num_steps", "log_every_steps", "checkpoint_every_steps"):
        out.get("train", {}).pop(key, None)
    for key in ("device", "devices", "ddp_timeout_s", "torch_threads", "eval_episodes", "eval_num_procs", "run_dir", "run_name", "overwrite",
                "force"):
        out.get("run", {}).pop(key, None)
    out.get("dataset", {}).pop("mode", None)
    out.get("dataset", {}).pop("prefetch_batches", None)
    return out


def build_bc_policy(cfg: BCConfig, dataset: DemoDataset, device: torch.device) -> Policy:
    """The untrained policy for ``dataset`` (the state normaliser set from its statistics)."""
    policy = build_policy(cfg.net, cfg.env.obs_mode, dataset.obs_shapes, dataset.action_dim).to(device)
    if "state" in dataset.obs_shapes:
        policy.set_state_stats(*dataset.state_stats())
    return policy


def _resume(resume_from, device: torch.device, config_dict: dict, policy: Policy,
            optimizer: torch.optim.Optimizer) -> int:
    """Model, optimizer and RNG states from a checkpoint of the same config; returns the updates it had done."""
    ckpt = load_checkpoint(resume_from, map_location=device)
    if _comparable(ckpt["config"]) != _comparable(config_dict):
        raise CheckpointError(
            f"checkpoint {resume_from} was trained with a different config than this run",
            hint="resume with the run's saved config.yaml (only train.num_steps/logging may change)",
        )
    policy.load_state_dict(ckpt["model"])
    optimizer.load_state_dict(ckpt["optimizer"])
    restore_rng_states(ckpt["rng"])
    return int(ckpt["updates"])


def _action_weights(cfg: BCConfig, policy: Policy, dataset: DemoDataset, device: torch.device) -> torch.Tensor | None:
    """train.standardize_action_loss: the per-dimension loss weights (deterministic heads only)."""
    if not cfg.train.standardize_action_loss:
        return None
    if not policy.deterministic:
        raise ConfigError("train.standardize_action_loss needs net.head=deterministic "
                          f"(got {cfg.net.head!r}): Gaussian heads are fit by likelihood",
                          hint="set train.standardize_action_loss=false or net.head=deterministic")
    return action_loss_weights(dataset.action_stats()[1]).to(device)


def train(cfg: BCConfig, resume_from: str | Path | None = None, progress: bool = True,
          sink: MetricsSink | None = None, *, learners: Learners | None = None) -> TrainResult:
    """Train BC per ``cfg``; checkpoints and metrics.jsonl go to the run directory, metrics also to ``sink``.
    With ``run.devices`` this launches the learners (ms2core.algos.distributed; each gets its ``learners``, and
    only rank 0 writes files and logs) and returns rank 0's result."""
    if learners is None and distributed.num_learners(cfg.run) > 1:
        return _launch_learners(cfg, resume_from, progress, sink)
    main = learners is None or learners.is_main
    device = setup_torch(cfg.run, learners)  # seeds python, numpy, torch with run.seed
    run_dir = default_run_dir(cfg)
    ckpt_dir = run_dir / "checkpoints"
    config_dict = cfg.model_dump(mode="json")

    dataset = build_dataset(cfg, device)
    policy = build_bc_policy(cfg, dataset, device)
    optimizer = torch.optim.Adam(policy.parameters(), lr=cfg.train.lr, weight_decay=cfg.train.weight_decay)
    start_step = 0 if resume_from is None else _resume(resume_from, device, config_dict, policy, optimizer)
    metrics_path = run_dir / "metrics.jsonl"
    if main:
        dump_config(cfg, run_dir / "config.yaml")
        _truncate_metrics(metrics_path, start_step)

    extra = _checkpoint_extra(cfg, dataset)
    shard = learners.rows(cfg.train.batch_size, "train.batch_size") if learners is not None else None
    stream = BatchStream(dataset, cfg.train.batch_size, cfg.run.seed, start_batch=start_step, device=device,
                         prefetch_batches=cfg.dataset.prefetch_batches if device.type == "cuda" else 0, shard=shard)
    update = make_update_fn(policy, optimizer, cfg.train.precision, cfg.train.grad_clip_norm,
                            cfg.train.state_noise_std, _action_weights(cfg, policy, dataset, device), learners,
                            cfg.train.batch_size)

    pending = _PendingLosses(f"the BC loss (train.lr={cfg.train.lr:g})")

    def checkpoint(step: int, name: str) -> Path:
        pending.check(step)
        assert_finite_parameters([policy], step)  # never write a checkpoint with non-finite weights
        if not main:  # the weights are the same on every learner: rank 0 writes them once
            return ckpt_dir / name
        return save_checkpoint(ckpt_dir / name, model=policy, optimizer=optimizer, step=step, config=config_dict,
                               sampler=stream.state_dict(), extra=extra)

    def log_interval(metrics, done: int, bar) -> None:
        pending.check(done)
        assert_finite_parameters([policy], done)
        values = pending.take()
        losses.extend(values)
        if main:
            _write_metrics_line(metrics, metrics_path, {"step": done, "loss": values[-1],
                                                        "loss_mean": float(np.mean(values))})
        if sink is not None:
            sink.log({"train/loss": values[-1], "train/loss_mean": float(np.mean(values))}, done)
        if hasattr(bar, "set_postfix"):
            bar.set_postfix(loss=f"{values[-1]:.4g}")

    losses: list[float] = []
    check_every_step = device.type == "cpu"  # free on CPU; on CUDA it would add a host sync per step
    bar = _progress(range(start_step, cfg.train.num_steps), progress and main)
    policy.train()
    t0 = time.perf_counter()
    try:
        with open(metrics_path, "a") if main else contextlib.nullcontext() as metrics:
            for step in bar:
                pending.append(update(next(stream)))
                done = step + 1
                if check_every_step:
                    assert_finite_loss(pending[-1], pending.what, done)
                if done % cfg.train.log_every_steps == 0 or done == cfg.train.num_steps:
                    log_interval(metrics, done, bar)
                if done % cfg.train.checkpoint_every_steps == 0 and done != cfg.train.num_steps:
                    checkpoint(done, checkpoint_name(done))
    except TrainingDivergedError as exc:
        raise with_last_checkpoint(exc, latest_good_checkpoint(ckpt_dir)) from None
    finally:
        stream.close()
    elapsed = time.perf_counter() - t0
    final = checkpoint(cfg.train.num_steps, checkpoint_name(cfg.train.num_steps))
    final_link = ckpt_dir / FINAL_CHECKPOINT
    if main:
        write_atomic(final_link, lambda f: f.write(final.read_bytes()), what="checkpoint")
    return _result(cfg, run_dir, final_link, start_step, losses, elapsed)


def _checkpoint_extra(cfg: BCConfig, dataset: DemoDataset) -> dict:
    """What a BC checkpoint needs to be rebuilt as a policy without the dataset."""
    return {"algo": "bc", "obs_mode": cfg.env.obs_mode, "action_dim": dataset.action_dim,
            "obs_shapes": {k: list(v) for k, v in dataset.obs_shapes.items()}, "dataset_manifest": dataset.manifests[0]}


def _result(cfg: BCConfig, run_dir: Path, final: Path, start_step: int, losses: list[float],
            elapsed: float) -> TrainResult:
    steps_run = cfg.train.num_steps - start_step  # updates of this invocation
    return TrainResult(
        algo="bc", run_dir=str(run_dir), final_checkpoint=str(final), updates=cfg.train.num_steps,
        start_update=start_step, final_loss=losses[-1] if losses else None, losses=losses,
        updates_per_s=steps_run / elapsed if elapsed > 0 and steps_run else 0.0,
    )


def _launch_learners(cfg: BCConfig, resume_from, progress: bool, sink) -> TrainResult:
    """``run.devices``: the data-parallel learners, in one run directory chosen here (rank 0 writes it)."""
    distributed.shard_rows(cfg.train.batch_size, 0, distributed.num_learners(cfg.run), "train.batch_size")
    cfg = cfg.model_copy(update={"run": cfg.run.model_copy(update={"run_dir": str(default_run_dir(cfg))})})
    return distributed.launch(train, cfg, main_only=dict(progress=progress, sink=sink), resume_from=resume_from)


class _PendingLosses(list):
    """Losses of the steps since the last host sync, still on the device."""

    def __init__(self, what: str):
        super().__init__()
        self.what = what

    def check(self, done: int) -> None:
        """NaN/Inf in a pending loss: stop, naming the first bad step (one sync, at log/checkpoint steps)."""
        if self and (bad := first_nonfinite(torch.stack(self).float())) is not None:
            assert_finite_loss(self[bad], self.what, done - len(self) + bad + 1)

    def take(self) -> list[float]:
        """The pending losses as floats (one host sync per log interval); none pending after."""
        values = torch.stack(self).float().cpu().tolist()
        self.clear()
        return values


def _write_metrics_line(file, path: Path, record: dict) -> None:
    try:
        file.write(json.dumps(record) + "\n")
        file.flush()
    except OSError as exc:
        if is_disk_full(exc):
            raise disk_full_error(path, exc, "metrics") from exc
        raise


def latest_good_checkpoint(ckpt_dir: Path) -> Path | None:
    """The newest ckpt_*.pt (every checkpoint written is finite: checkpoint() refuses others)."""
    from ms2core.checkpoint import latest_checkpoint

    return latest_checkpoint(ckpt_dir) if ckpt_dir.is_dir() else None


def _truncate_metrics(path: Path, keep_up_to_step: int) -> None:
    """A resumed run rewrites what the killed run logged after its last checkpoint."""
    if not path.exists():
        return
    kept = [ln for ln in path.read_text().splitlines() if ln.strip() and json.loads(ln)["step"] <= keep_up_to_step]
    text = "".join(ln + "\n" for ln in kept)
    write_atomic(path, lambda f: f.write(text.encode()), what="metrics")


def _progress(steps: range, enabled: bool):
    if not enabled:
        return steps
    from tqdm.auto import tqdm

    return tqdm(steps, desc="bc", unit="upd", dynamic_ncols=True, mininterval=1.0)


def load_policy(checkpoint_path: str | Path, device: str | torch.device = "cpu") -> tuple[Policy, dict]:
    """Rebuild the policy stored in a BC checkpoint (for evaluation); returns (policy, checkpoint view)."""
    return policy_from_checkpoint(load_checkpoint(checkpoint_path, map_location=device), checkpoint_path, device)


def policy_from_checkpoint(ckpt: dict, path, device: str | torch.device = "cpu") -> tuple[Policy, dict]:
    """The policy of a BC checkpoint read by ms2core.checkpoint.read_checkpoint, and its view for evaluation
    (the checkpoint, with ``step`` = its updates)."""
    from storage_schemas.training import NetConfig

    extra = ckpt.get("extra", {})
    if "obs_shapes" not in extra or "model" not in ckpt:
        raise CheckpointError(f"checkpoint {path} does not record its observation shapes and weights",
                              hint="it was not written by ms2core.algos training")
    net_cfg = NetConfig.model_validate(ckpt["config"]["net"])
    shapes = {k: tuple(v) for k, v in extra["obs_shapes"].items()}
    policy = build_policy(net_cfg, extra["obs_mode"], shapes, int(extra["action_dim"]))
    try:
        policy.load_state_dict(ckpt["model"])
    except RuntimeError as exc:
        raise CheckpointError(f"bc checkpoint {path}: the weights do not fit the network its config describes: "
                              f"{exc}", hint="the checkpoint was edited or written by another version") from exc
    policy.to(device).eval()
    return policy, {**ckpt, "step": int(ckpt["updates"])}
