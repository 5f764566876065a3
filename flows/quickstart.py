"""``ms2 quickstart``: generate demos -> render (state; point clouds after replay) -> validate -> BC -> evaluate
-> register, sized so that a 2-core CPU ends with a policy that works in under ten minutes.

Where the time goes on a shared 2-core CPU (PickCube-v0): generation ~1.3 demos/s, replay to pd_ee_delta_pose
~0.2-0.4 demos/s (without the open-loop re-check), state rendering ~100 frames/s, point-cloud rendering ~8
frames/s (so only the first few converted demos), state BC 25-60 updates/s, evaluation ~1 episode/s. BC in the
recorded pd_joint_pos mode would skip the conversion but does not work (0% of 40 episodes, 120 demos, 5k updates).
"""

from __future__ import annotations

import time

from prefect import flow

from flows import stages
from flows.defaults import CONFIGS_DIR
from flows.train import train_bc
from ms2core.config import load_config
from storage_schemas.dataset import ObsProcessConfig, RenderConfig, RenderOptions
from storage_schemas.demos import GenerateDemosConfig, ReplayConfig
from storage_schemas.quickstart import QuickstartConfig, QuickstartSummary
from storage_schemas.training import BCConfig
from storage_schemas.validation import ValidationConfig

NEXT_STEPS = [
    "a strong state policy (89% on PickCube-v0): 1000 demos at planner speed 3 (ms2 demos generate --speed 3) and "
    "30k updates, configs/bc/pickcube_state.yaml (its header lists the commands); on a GPU: add --device cuda",
    "point clouds (GPU): ms2 train bc -c configs/bc/pickcube_pointcloud.yaml --device cuda",
    "DAPG from the demos: prefect deployment run train-dapg/default (or ms2 train dapg -c configs/dapg/pickcube_state.yaml); "
    "95-98% with configs/dapg/pickcube_state_h50_fast_demos.yaml on speed-3 demos",
]


def bc_config_for(config: QuickstartConfig, store: str) -> BCConfig:
    """configs/bc/pickcube_state.yaml's settings (state noise, standardized action loss) with the quickstart's
    budget; the file's 30k updates and 100 evaluation episodes take ~20 min on a shared 2-core CPU."""
    return load_config(BCConfig, CONFIGS_DIR / "bc" / "pickcube_state.yaml", [
        f"env.env_id={config.env_id}", f"env.control_mode={config.target_control_mode}", f"env.backend={config.backend}",
        f"dataset.paths=[{store}]", f"train.num_steps={config.bc_steps}",
        f"train.log_every_steps={max(1, min(500, config.bc_steps))}",
        f"train.checkpoint_every_steps={config.bc_steps}", f"run.eval_episodes={config.eval_episodes}",
        f"run.eval_num_procs={config.workers}",
        "run.run_name=quickstart"])


def _render_and_validate(config: QuickstartConfig, source: str, obs: ObsProcessConfig, max_episodes: int | None = None):
    options = RenderOptions(obs=obs, backend=config.backend, max_episodes=max_episodes)
    rendered = stages.render_dataset(RenderConfig(source=source, options=options, workers=config.workers,
                                                  progress=False))
    validated = stages.validate_dataset(ValidationConfig(
        path=rendered.store, replay_sample=config.validate_replay_sample, progress=False))
    if validated.report.status != "passed":
        from ms2core.errors import DatasetError

        raise DatasetError(f"dataset {rendered.store} failed validation with {validated.report.n_errors} errors",
                           hint=f"see {validated.report_path}; earlier stage outputs are kept")
    return rendered


@flow(name="quickstart", log_prints=True)
def quickstart(config: QuickstartConfig = QuickstartConfig()) -> QuickstartSummary:
    from ms2core.evaluation import rate_ci95

    start = time.perf_counter()
    generated = stages.generate_demos(GenerateDemosConfig(
        env_id=config.env_id, num_episodes=config.num_demos, num_workers=config.workers, backend=config.backend,
        progress=False))
    # No open-loop re-check here (it doubles the slowest stage on a CPU); validation replays a sample.
    replayed = stages.replay_demos(ReplayConfig(
        input=generated.h5_path, target_control_mode=config.target_control_mode, num_workers=config.workers,
        verify_open_loop=False, backend=config.backend, progress=False))
    state = _render_and_validate(config, replayed.h5_path, ObsProcessConfig(obs_mode="state"))
    pointcloud = (_render_and_validate(config, replayed.h5_path, config.render_options().obs,
                                       max_episodes=config.pointcloud_episodes)
                  if config.pointcloud_episodes else None)
    # BC evaluates its final checkpoint itself (no videos: rendering them would cost minutes on a CPU)
    trained = train_bc(bc_config_for(config, state.store))
    rate, n = trained["success_rate"], config.eval_episodes
    ci = None
    if rate is not None and n:
        stat = rate_ci95([1.0] * round(rate * n) + [0.0] * (n - round(rate * n)))
        ci = (stat.ci95_low, stat.ci95_high)
    summary = QuickstartSummary(
        env_id=config.env_id, dataset=state.store, n_episodes=state.n_episodes, n_rows=state.n_rows,
        validation_status="passed", pointcloud_dataset=pointcloud.store if pointcloud else None,
        pointcloud_episodes=pointcloud.n_episodes if pointcloud else 0,
        pointcloud_validation_status="passed" if pointcloud else None,
        run_id=trained["run_id"], run_dir=trained["run_dir"], checkpoint=trained["checkpoint"],
        success_rate=rate, success_ci95=ci, eval_episodes=n,
        meaning=_meaning(config, state.n_episodes, rate, ci, n),
        next_steps=NEXT_STEPS, model_name=trained.get("model_name"), model_version=trained.get("model_version"),
        wall_s=time.perf_counter() - start)
    print(summary.meaning)
    print("next, for a strong policy:\n  " + "\n  ".join(NEXT_STEPS))
    return summary


def _meaning(config: QuickstartConfig, n_demos: int, rate, ci, n: int) -> str:
    if rate is None or not n:
        return "the policy was not evaluated (eval_episodes=0)"
    return (f"the state-observation BC policy ({n_demos} demos, {config.bc_steps} updates) "
            f"picked up the cube and brought it to the goal in {rate:.0%} of {n} new episodes (95% interval "
            f"{ci[0]:.0%}-{ci[1]:.0%}); the README's full run (1000 demos, 30k updates) reaches 68%")
