"""PPO learner throughput: minibatch updates/s at ManiSkill2-Learn's batch size (400), CPU vs GPU.

    python -m benchmarks.ppo_learner_throughput --backbone pointnet   # ms2core.nn PointNet, CPU vs CUDA
    python -m benchmarks.ppo_learner_throughput --backbone mlp        # state observations, runs anywhere

Times ``ppo.ppo_update`` (GAE + epochs of clipped-surrogate minibatch steps) on a
synthetic rollout with the shapes of PickCube-v0 point-cloud observations
(``--points`` xyz/rgb per step + the 51-dim state), shared backbone as in
ManiSkill2-Learn's point-cloud config. The baseline is the CPU measured in the
same run; with CUDA present the GPU is measured too and the ratio reported.
Results: benchmarks/results/ppo_learner_throughput_<backbone>.json.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from benchmarks._common import write_result
from ms2core.algos.ppo import Rollout, build_actor_critic, ppo_update, unique_parameters
from storage_schemas.rl import NetConfig, PPOParams

STATE_DIM, ACTION_DIM = 51, 7


def pointnet_backbone(num_points: int):
    """ms2core.nn's PointNet ([64, 128, 512] + max-pool, concatenated with the state, then MLP [256, 256])."""
    from ms2core.nn.encoders import PointNetEncoder

    return PointNetEncoder(STATE_DIM, point_mlp=[64, 128, 512], hidden=[256, 256])


def synthetic_rollout(steps: int, backbone: str, points: int, rng: np.random.Generator) -> Rollout:
    obs = {"state": rng.normal(size=(steps, 1, STATE_DIM)).astype(np.float32)}
    if backbone == "pointnet":
        obs["xyz"] = rng.normal(size=(steps, 1, points, 3)).astype(np.float32)
        obs["rgb"] = rng.integers(0, 255, size=(steps, 1, points, 3), dtype=np.uint8)
    zeros = np.zeros((steps, 1), np.float32)
    return Rollout(obs=obs, actions=rng.normal(size=(steps, 1, ACTION_DIM)).astype(np.float32),
                   log_probs=zeros - 5.0, values=zeros, next_values=zeros,
                   rewards=rng.normal(size=(steps, 1)).astype(np.float32),
                   terminated=np.zeros((steps, 1), bool), dones=np.zeros((steps, 1), bool))


def measure(device: str, args) -> dict:
    torch.manual_seed(0)
    dev = torch.device(device)
    net = NetConfig(hidden_sizes=[256, 256], shared_backbone=True)
    backbone = pointnet_backbone(args.points) if args.backbone == "pointnet" else None
    actor, critic = build_actor_critic({"state": STATE_DIM}, ACTION_DIM, net, backbone)
    actor.to(dev), critic.to(dev)
    opt = torch.optim.Adam(unique_parameters(actor, critic), lr=3e-4)
    params = PPOParams(minibatch_size=400, num_epochs=args.epochs, critic_warmup_epochs=0, max_kl=None)
    rollout = synthetic_rollout(args.rollout_steps, args.backbone, args.points, np.random.default_rng(0))
    gen = np.random.default_rng(0)
    ppo_update(actor, critic, opt, rollout, params, dev, 1, gen)  # warm-up (allocations, cuDNN autotune)
    if dev.type == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    stats = {}
    for _ in range(args.repeats):
        stats = ppo_update(actor, critic, opt, rollout, params, dev, 1, gen)
    if dev.type == "cuda":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - t0
    minibatches = args.repeats * stats["policy_steps"]
    return {"device": device, "minibatch_updates_per_s": minibatches / seconds,
            "transitions_per_s": minibatches * 400 / seconds, "seconds": seconds, "minibatches": minibatches,
            "torch_threads": torch.get_num_threads()}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--backbone", choices=["pointnet", "mlp"], default="pointnet")
    p.add_argument("--points", type=int, default=1200, help="points per observation (ManiSkill2-Learn downsamples to ~1200)")
    p.add_argument("--rollout-steps", type=int, default=4000)
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--threads", type=int, default=None)
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    results = [measure("cpu", args)]
    if torch.cuda.is_available():
        results.append(measure("cuda", args))
    payload = {"args": vars(args), "results": results}
    if len(results) == 2:
        payload["gpu_over_cpu"] = results[1]["minibatch_updates_per_s"] / results[0]["minibatch_updates_per_s"]
    for r in results:
        print(f"{r['device']}: {r['minibatch_updates_per_s']:.1f} minibatch updates/s (batch 400)")
    if "gpu_over_cpu" in payload:
        print(f"GPU / CPU = {payload['gpu_over_cpu']:.1f}x")
    print("wrote", write_result(f"ppo_learner_throughput_{args.backbone}", payload))


if __name__ == "__main__":
    main()
