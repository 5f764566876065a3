"""Learning benchmark on gymnasium's Pendulum-v1 (no simulator): SAC, PPO, and GAIL from SAC demos.

    python -m benchmarks.rl_pendulum --part sac-gail     # SAC 20k steps, its demos -> GAIL
    python -m benchmarks.rl_pendulum --part ppo --ppo-steps 300000

Bars (issue 8): SAC mean return >= -250 within 20k steps, PPO >= -400 within 300k,
GAIL (demos from the SAC policy) >= -400. The baseline measured in the same run
is a uniform-random policy; results go to benchmarks/results/rl_pendulum_<part>.json
with the learning curves (mean return of the training episodes vs env steps) and
a deterministic evaluation of the final policy.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from benchmarks._common import write_result
from ms2core.algos._common import obs_to_torch
from ms2core.algos._demos import write_demo_zarr
from ms2core.algos.gail import train_gail
from ms2core.algos.ppo import train_ppo
from ms2core.algos.sac import run_sac
from ms2core.rollout import EnvFactory, EpisodeSummary, VectorEnv, run_episodes
from storage_schemas.rl import GAILConfig, PPOConfig, SACConfig

ENV = dict(gym_env_id="Pendulum-v1", num_envs=1, num_procs=0)


class PrintSink:
    def __init__(self, name: str):
        self.name, self.t0 = name, time.perf_counter()

    def log(self, m, step):
        keys = ("mean_return", "eval_mean_return", "alpha", "approx_kl", "disc_demo_prob", "disc_agent_prob")
        shown = " ".join(f"{k}={m[k]:.3g}" for k in keys if k in m)
        print(f"[{self.name} {time.perf_counter() - self.t0:6.0f}s] steps={step} {shown}", flush=True)

    def close(self):
        pass


def random_baseline(episodes: int = 10) -> float:
    with VectorEnv(EnvFactory(gym_env_id="Pendulum-v1"), num_envs=1, seed=123) as vec:
        rng = np.random.default_rng(0)
        return EpisodeSummary.of(run_episodes(vec, lambda o: rng.uniform(-1, 1, (1, 1)), episodes)).mean_return


def sac_config(steps: int, seed: int) -> SACConfig:
    return SACConfig.model_validate(dict(
        rollout=ENV, net=dict(hidden_sizes=[128, 128]),
        sac=dict(learning_starts=1000, gamma=0.99, batch_size=256, buffer_capacity=100_000),
        run=dict(total_env_steps=steps, log_every_steps=1000, seed=seed, eval_episodes=10)))


def collect_demos(actor, path: Path, episodes: int, seed: int) -> tuple[Path, float]:
    """Roll the SAC policy out deterministically and write the transitions in ms2flow's Zarr layout."""
    out, returns = [], []
    with VectorEnv(EnvFactory(gym_env_id="Pendulum-v1"), num_envs=1, seed=seed) as vec:
        for _ in range(episodes):
            obs, ep = vec.reset(), {"obs/state": [], "actions": [], "rewards": []}
            while True:
                with torch.no_grad():
                    a = actor.act_deterministic(obs_to_torch(obs, torch.device("cpu"))).numpy()
                b = vec.step(a)
                ep["obs/state"].append(obs["state"][0]), ep["actions"].append(vec.to_env_action(a)[0])
                ep["rewards"].append(b.rewards[0])
                obs = b.obs
                if b.dones[0]:
                    break
            returns.append(float(np.sum(ep["rewards"])))
            out.append({k: np.asarray(v, np.float32) for k, v in ep.items()})
    return write_demo_zarr(path, out), float(np.mean(returns))


def run_sac_gail(args) -> dict:
    baseline = random_baseline()
    t0 = time.perf_counter()
    sac_result, agent = run_sac(sac_config(args.sac_steps, args.seed), PrintSink("sac"))
    sac_s = time.perf_counter() - t0
    with tempfile.TemporaryDirectory() as tmp:
        demo_path, demo_return = collect_demos(agent.actor, Path(tmp) / "pendulum_sac_demos.zarr", args.demo_episodes,
                                               seed=1000)
        gail_cfg = GAILConfig.model_validate(dict(
            rollout=ENV, net=dict(hidden_sizes=[128, 128]),
            sac=dict(learning_starts=1000, gamma=0.99, batch_size=256, buffer_capacity=100_000),
            gail=dict(discriminator_hidden_sizes=[64, 64], discriminator_updates_per_env_step=0.25,
                      gradient_penalty=1.0),
            demos=dict(path=str(demo_path), obs_keys=["state"]),
            run=dict(total_env_steps=args.gail_steps, log_every_steps=1000, seed=args.seed, eval_episodes=10)))
        t0 = time.perf_counter()
        gail_result = train_gail(gail_cfg, PrintSink("gail"))
        gail_s = time.perf_counter() - t0
    return {
        "random_policy_mean_return": baseline,
        "sac": {**_summary(sac_result, baseline, -250.0), "wall_s": sac_s},
        "demos": {"episodes": args.demo_episodes, "mean_return": demo_return},
        "gail": {**_summary(gail_result, baseline, -400.0), "wall_s": gail_s},
    }


def run_ppo_part(args) -> dict:
    baseline = random_baseline()
    cfg = PPOConfig.model_validate(dict(
        rollout={**ENV, "num_envs": 4},
        net=dict(hidden_sizes=[64, 64], activation="tanh", init_log_std=0.0),
        ppo=dict(rollout_steps=4096, num_epochs=10, minibatch_size=64, critic_warmup_epochs=0, gamma=0.9,
                 gae_lambda=0.95, lr=1e-3, max_kl=None),
        run=dict(total_env_steps=args.ppo_steps, log_every_steps=8192, seed=args.seed, eval_episodes=10)))
    t0 = time.perf_counter()
    result = train_ppo(cfg, PrintSink("ppo"))
    return {"random_policy_mean_return": baseline, "ppo": {**_summary(result, baseline, -400.0),
                                                          "wall_s": time.perf_counter() - t0}}


def _summary(result, baseline: float, bar: float) -> dict:
    curve = result.curve
    reached = next((c["env_steps"] for c in curve if c["mean_return"] >= bar), None)
    best = max((c["mean_return"] for c in curve if np.isfinite(c["mean_return"])), default=float("nan"))
    return {
        "env_steps": result.env_steps, "bar": bar, "first_env_steps_at_bar": reached,
        "final_train_mean_return": result.final_mean_return, "best_train_mean_return": best,
        "eval_mean_return": result.eval_mean_return,
        "eval_vs_random_ratio": (result.eval_mean_return / baseline) if result.eval_mean_return is not None else None,
        "curve": curve,
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--part", choices=["sac-gail", "ppo"], required=True)
    p.add_argument("--sac-steps", type=int, default=20_000)
    p.add_argument("--gail-steps", type=int, default=20_000)
    p.add_argument("--demo-episodes", type=int, default=10)
    p.add_argument("--ppo-steps", type=int, default=300_000)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    torch.set_num_threads(1)  # 2 shared cores: more threads only spin
    payload = run_sac_gail(args) if args.part == "sac-gail" else run_ppo_part(args)
    path = write_result(f"rl_pendulum_{args.part.replace('-', '_')}", {"args": vars(args), **payload})
    print(json.dumps({k: v for k, v in payload.items()}, default=str)[:2000])
    print("wrote", path)


if __name__ == "__main__":
    main()
