"""ManiSkill2-Learn vs ms2flow, same demos, same run: issue 22's acceptance table.

The real tool runs beside ours: ManiSkill2-Learn's ``tools/convert_state.py`` from its repository
checkout (``--ml2l-repo``, default /tmp/ML2L) in its side venv (``--ml2l-python``, default
/tmp/ml2l-venv/bin/python; its .pth adds this venv's site-packages, tests/data/ml2l/side_env_stubs
stand in for open3d/pytorch3d/torchvision/pynvml). ms2flow runs as a user runs it: ``ms2 render
--config configs/render/<mode>_ml2l.yaml`` (obs_layout ml2l) then ``ms2 export-h5``. Both get the same
control-mode demo pair: ``--episodes`` PickCube-v0 planner demos (``ms2 demos generate`` + ``ms2 replay``
to pd_ee_delta_pose), the last one cut to ``--cut-steps`` steps before success, so one episode ends
truncated, not terminated.

Configurations: point clouds in the ee frame + 50 goal points (ML2L's recommended PickCube setting),
point clouds in the base frame, rgbd. Rows, per configuration:

* rewards: per-step max |ML2L - ms2flow| and the episode sums (both step the recorded action from the
  recorded state; tolerance 0: bit for bit);
* dones: ML2L's ``dones`` (convert_state: the recorded success) vs our ``terminated``,
  ``episode_dones`` vs our episode ends, its cut episodes (``episode_dones & ~dones``; its
  ``is_truncated`` is a sampler flag, all False in converted demos) vs our ``truncated``; exact;
* layout: key sets, shapes, dtypes and max |diff| of every dataset of the two h5 files
  (tests/data/ml2l/compare_convert_state.compare); float arrays within float32 rounding (1e-5), actions
  and images exact; point xyz, a random subset on both sides, by per-frame centroid distance;
* bytes/frame (our ml2l-layout Zarr store vs ML2L's h5, same arrays) and random 256-transition batches/s
  (benchmarks/storage_reads.measure: DatasetStore.read_rows vs h5py on ML2L's own file);
* render frames/s at 1 and 2 processes (``--num-procs`` vs ``--workers``), wall clock of the command as
  a user runs it (start-up included); the four runs of a configuration follow each other in one repeat,
  so the ratios are taken under the same load (the machine is shared);
* rewards of each tool's 1- vs 2-process output: a process steps its episodes one after another in one
  env and PhysX keeps contact/solver state across set_state, so which episodes an env stepped before
  moves some rewards by ~1e-4 (both tools; 1 process each, the two tools agree bit for bit).

    python -m benchmarks.ml2l_side_by_side [--episodes 8] [--scaling pointcloud_ee rgbd] [--demo PAIR.h5]
    python -m benchmarks.ml2l_side_by_side --keep DIR --compare-only   # compare again what a --keep run left
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np

from benchmarks import storage_reads
from benchmarks._common import write_result
from ms2core.data.store import DatasetStore
from ms2core.trajectory import DemoPair, write_demo_pair

REPO = Path(__file__).resolve().parents[1]
ENV_ID = "PickCube-v0"
CONTROL_MODE = "pd_ee_delta_pose"
FLOAT_TOL = 1e-5  # float32 rounding of composed poses (state, frame_related_states, to_frames)
# name -> (ms2 config, its --set overrides, convert_state's observation arguments)
CONFIGS = {
    "pointcloud_ee": ("configs/render/pointcloud_ml2l.yaml", [],
                      ["--obs-mode", "pointcloud", "--obs-frame", "ee", "--n-points", "1200", "--n-goal-points", "50"]),
    "pointcloud_base": ("configs/render/pointcloud_ml2l.yaml",
                        ["options.obs.obs_frame=base", "options.obs.n_goal_points=0"],
                        ["--obs-mode", "pointcloud", "--obs-frame", "base", "--n-points", "1200"]),
    "rgbd": ("configs/render/rgbd_ml2l.yaml", [], ["--obs-mode", "rgbd"]),
}


def _compare_module():
    sys.path.insert(0, str(REPO / "tests" / "data" / "ml2l"))
    try:
        import compare_convert_state
    finally:
        sys.path.pop(0)
    return compare_convert_state


# -- demos -----------------------------------------------------------------------------------------
def make_demos(work: Path, n_episodes: int, cut_steps: int, source: str | None) -> Path:
    """The first ``n_episodes`` of a pd_ee_delta_pose pair (generated and replayed here unless ``source``),
    renumbered 0..n-1, the last cut to ``cut_steps`` steps (no success within them)."""
    if source is None:
        from pipelines import demos, replay
        from storage_schemas.demos import GenerateDemosConfig, ReplayConfig

        generated = demos.run(GenerateDemosConfig(env_id=ENV_ID, num_episodes=n_episodes,
                                                  output=str(work / "gen" / "pick"), progress=False))
        source = replay.run(ReplayConfig(input=generated.h5_path, target_control_mode=CONTROL_MODE,
                                         verify_open_loop=False, progress=False)).h5_path
    with DemoPair(source) as pair:
        env_info = pair.env_info
        episodes = [pair.read_episode(i) for i in range(n_episodes)]
    for i, ep in enumerate(episodes):
        ep.meta = ep.meta.model_copy(update={"episode_id": i})
        ep.extras = {}
    last = episodes[-1]
    if last.success[:cut_steps].any() or last.num_steps <= cut_steps:
        raise SystemExit(f"episode {n_episodes - 1} succeeds within {cut_steps} steps: pass a smaller --cut-steps")
    last.actions, last.success = last.actions[:cut_steps], last.success[:cut_steps]
    last.env_states = last.env_states[: cut_steps + 1]
    last.meta = last.meta.model_copy(update={"elapsed_steps": cut_steps, "info": {"success": False}})
    h5, _ = write_demo_pair(work / "demos" / "pick.h5", env_info, episodes)
    return h5


# -- the two tools, timed as commands -----------------------------------------------------------------
def timed(cmd: list[str], log: Path, timeout_s: float, env: dict | None = None, cwd: Path = REPO) -> float:
    start = time.perf_counter()
    with open(log, "w") as out:
        proc = subprocess.run(cmd, cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT, timeout=timeout_s)
    seconds = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} exited {proc.returncode}; last lines of {log}:\n"
                         + "".join(log.read_text().splitlines(True)[-15:]))
    return seconds


@dataclass(frozen=True)
class Ml2lTool:
    """ManiSkill2-Learn's checkout and the side venv's interpreter that runs it."""

    repo: Path
    python: str

    def env(self) -> dict:
        from ms2core.envs.rendering import layer_data_dir

        dirs = os.environ.get("XDG_DATA_DIRS") or "/usr/local/share:/usr/share"
        return {**os.environ, "MS2FLOW_VK_CPU_LAYER": "1", "XDG_DATA_DIRS": f"{layer_data_dir()}:{dirs}",
                "PYTHONPATH": f"{self.repo}:{REPO / 'tests' / 'data' / 'ml2l' / 'side_env_stubs'}"}

    def convert_state(self, demo: Path, name: str, procs: int, out: Path, timeout_s: float) -> float:
        """convert_state as its README runs it; it opens the input r+, so it gets its own copy of the pair."""
        copy = out.parent / "ml2l_input" / demo.name
        if not copy.exists():
            copy.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(demo, copy)
            shutil.copy(demo.with_suffix(".json"), copy.with_suffix(".json"))
        cmd = [self.python, "tools/convert_state.py", "--env-name", ENV_ID, "--traj-name", str(copy),
               "--json-name", str(copy.with_suffix(".json")), "--output-name", str(out),
               "--control-mode", CONTROL_MODE, "--reward-mode", "dense", "--num-procs", str(procs), *CONFIGS[name][2]]
        return timed(cmd, out.with_suffix(".log"), timeout_s, env=self.env(), cwd=self.repo)


def run_ms2(demo: Path, name: str, workers: int, store: Path, timeout_s: float) -> float:
    config, overrides, _ = CONFIGS[name]
    cmd = [sys.executable, "-m", "flows.cli", "render", str(demo), "--config", config, "--store", str(store),
           "--workers", str(workers), *[a for o in overrides for a in ("--set", o)]]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return timed(cmd, store.with_suffix(".log"), timeout_s, env=env)


def export(store: Path, out: Path) -> Path:
    cmd = [sys.executable, "-m", "flows.cli", "export-h5", str(store), str(out), "--overwrite"]
    timed(cmd, out.with_suffix(".export.log"), 600, env={**os.environ, "PYTHONPATH": str(REPO)})
    return out


def h5_rows(path: Path) -> int:
    with h5py.File(path) as f:
        return sum(f[t]["dict_str_actions"].shape[0] for t in f)


def render_runs(ml2l: Ml2lTool, demo: Path, work: Path, name: str, procs: list[int], timeout_s: float) -> dict:
    """ML2L then ms2flow at each process count, back to back; frames/s of each and the ratios."""
    row: dict = {}
    for n in procs:
        ml2l_out, store = work / f"ml2l_{name}_p{n}.h5", work / f"ms2_{name}_w{n}.zarr"
        row[f"ml2l_{n}_s"] = ml2l.convert_state(demo, name, n, ml2l_out, timeout_s)
        row[f"ms2_{n}_s"] = run_ms2(demo, name, n, store, timeout_s)
        row[f"ml2l_{n}_frames_per_s"] = h5_rows(ml2l_out) / row[f"ml2l_{n}_s"]
        row[f"ms2_{n}_frames_per_s"] = DatasetStore.open(store).n_rows / row[f"ms2_{n}_s"]
        row[f"ratio_{n}"] = row[f"ms2_{n}_frames_per_s"] / row[f"ml2l_{n}_frames_per_s"]
        print(f"{name} {n} process(es): ML2L {row[f'ml2l_{n}_frames_per_s']:.2f} frames/s, ms2flow "
              f"{row[f'ms2_{n}_frames_per_s']:.2f} = {row[f'ratio_{n}']:.2f}x", flush=True)
    if {1, 2} <= set(procs):
        for tool in ("ml2l", "ms2"):
            row[f"{tool}_scaling_1_to_2"] = row[f"{tool}_2_frames_per_s"] / row[f"{tool}_1_frames_per_s"]
    return row


# -- comparisons -----------------------------------------------------------------------------------
def _trajs(path: Path) -> list[dict[str, np.ndarray]]:
    datasets = _compare_module().datasets
    with h5py.File(path) as f:
        return [{k: v[()] for k, v in datasets(f[t]).items()} for t in sorted(f, key=lambda t: int(t[5:]))]


def compare_rewards(theirs: list[dict], ours: list[dict]) -> dict:
    diff = [np.abs(a["rewards"].astype(np.float64) - b["rewards"]).ravel() for a, b in zip(theirs, ours)]
    return dict(max_abs_diff=float(max(d.max() for d in diff)), steps_differing=int(sum((d > 0).sum() for d in diff)),
                steps=int(sum(len(d) for d in diff)),
                ml2l_episode_sums=[float(a["rewards"].sum()) for a in theirs],
                ms2_episode_sums=[float(b["rewards"].sum()) for b in ours])


def compare_dones(theirs: list[dict], store_path: Path, ours_h5: list[dict]) -> dict:
    """ML2L's flags, mapped to ManiSkill2's meaning, against the store's success / terminated / truncated."""
    store = DatasetStore.open(store_path)
    flags = {k: store.read(k) for k in ("success", "terminated", "truncated")}
    ml2l = {k: np.concatenate([t[k].ravel() for t in theirs]) for k in ("dones", "episode_dones", "is_truncated")}
    our_ends = np.zeros(store.n_rows, bool)
    our_ends[store.episode_ends - 1] = True
    ml2l_cut = ml2l["episode_dones"] & ~ml2l["dones"]
    return dict(
        dones_vs_terminated_mismatches=int((ml2l["dones"] != flags["terminated"]).sum()),
        dones_vs_success_mismatches=int((ml2l["dones"] != flags["success"]).sum()),
        episode_dones_vs_episode_ends_mismatches=int((ml2l["episode_dones"] != our_ends).sum()),
        cut_vs_truncated_mismatches=int((ml2l_cut != flags["truncated"]).sum()),
        ends_are_terminated_or_truncated=bool((flags["terminated"] | flags["truncated"])[our_ends].all()),
        is_truncated_exported_equal=bool(np.array_equal(
            ml2l["is_truncated"], np.concatenate([t["is_truncated"].ravel() for t in ours_h5]))),
        ml2l_terminated_episodes=int((ml2l["dones"] & ml2l["episode_dones"]).sum()),
        ml2l_cut_episodes=int(ml2l_cut.sum()),
        ms2_terminated_episodes=int(flags["terminated"][our_ends].sum()),
        ms2_truncated_episodes=int(flags["truncated"].sum()),
    )


def _merge_key(merged: dict | None, r: dict, n_trajs: int) -> dict:
    """One key's record over trajectories: shapes/dtypes equal in all, largest max |diff|, mean centroid diff."""
    if merged is None:
        merged = dict(shape=r["ml2l_shape"][1:], dtype=r["ml2l_dtype"], same=True, diff_kind=r["diff_kind"], diff=0.0)
    merged["same"] &= r["ml2l_shape"] == r["ms2_shape"] and r["ml2l_dtype"] == r["ms2_dtype"]
    if r["diff_kind"] == "max_abs":
        merged["diff"] = max(merged["diff"], r["diff"])
    elif r["diff_kind"] == "centroid_mm":
        merged["diff"] += r["diff"] / n_trajs
    return merged


def compare_layout(ml2l_h5: Path, ms2_h5: Path) -> dict:
    """Key sets, shapes, dtypes and the largest difference of every dataset, over all trajectories."""
    per_traj = _compare_module().compare(str(ml2l_h5), str(ms2_h5))
    keys: dict[str, dict] = {}
    for traj in per_traj:
        for r in traj["keys"]:
            keys[r["key"]] = _merge_key(keys.get(r["key"]), r, len(per_traj))
    exact = [k for k, v in keys.items() if v["diff_kind"] == "max_abs"]
    worst = max(exact, key=lambda k: keys[k]["diff"])
    within = all(keys[k]["diff"] <= (FLOAT_TOL if keys[k]["dtype"].startswith("float") else 0) for k in exact)
    return dict(
        only_ml2l=sorted({k for t in per_traj for k in t["only_ml2l"]}),
        only_ms2=sorted({k for t in per_traj for k in t["only_ms2"]}),
        obs_keys=sorted(k for k in keys if k.startswith("obs/")),
        shapes_and_dtypes_equal=all(v["same"] for v in keys.values()),
        state_dim=int(keys["obs/state"]["shape"][0]) if "obs/state" in keys else None,
        max_abs_diff=keys[worst]["diff"], max_abs_diff_key=worst, within_tolerance=within,
        xyz_centroid_mm=keys["obs/xyz"]["diff"] if "obs/xyz" in keys else None, keys=keys,
    )


def compare_config(work: Path, name: str, batches: int) -> dict:
    ml2l_h5, store = work / f"ml2l_{name}_p1.h5", work / f"ms2_{name}_w1.zarr"
    ms2_h5 = export(store, work / f"ms2_{name}.h5")
    theirs, ours = _trajs(ml2l_h5), _trajs(ms2_h5)
    if [len(t["actions"]) for t in theirs] != [len(t["actions"]) for t in ours]:
        raise SystemExit(f"{name}: episode lengths differ: ML2L {[len(t['actions']) for t in theirs]}, "
                         f"ms2flow {[len(t['actions']) for t in ours]}")
    reads = storage_reads.measure(store, ml2l_h5, batches, cache_fraction=0.25)
    return dict(frames=int(sum(len(t["actions"]) for t in ours)), rewards=compare_rewards(theirs, ours),
                dones=compare_dones(theirs, store, ours), layout=compare_layout(ml2l_h5, ms2_h5), storage=reads,
                process_counts=compare_process_counts(work, name))


def compare_process_counts(work: Path, name: str) -> dict | None:
    """Each tool's 1- vs 2-process output: rewards (max |diff|, steps differing) and, for ms2flow, every other array.

    A process renders its episodes one after another in one env; PhysX carries solver/contact state across
    set_state, so a reward can depend on which episodes that env stepped before (both tools show it)."""
    paths = [work / f"ml2l_{name}_p{n}.h5" for n in (1, 2)] + [work / f"ms2_{name}_w{n}.zarr" for n in (1, 2)]
    if not all(p.exists() for p in paths):
        return None
    t1, t2 = _trajs(paths[0]), _trajs(paths[1])
    ml2l = np.concatenate([np.abs(a["rewards"] - b["rewards"]).ravel() for a, b in zip(t1, t2)])
    s1, s2 = DatasetStore.open(paths[2]), DatasetStore.open(paths[3])
    ours = np.abs(s1.read("rewards").astype(np.float64) - s2.read("rewards"))
    return dict(ml2l_rewards_max_abs_diff=float(ml2l.max()), ml2l_rewards_steps_differing=int((ml2l > 0).sum()),
                ms2_rewards_max_abs_diff=float(ours.max()), ms2_rewards_steps_differing=int((ours > 0).sum()),
                ms2_other_arrays_equal=all(np.array_equal(s1.read(k), s2.read(k)) for k in s1.arrays if k != "rewards"))


# -- the table -------------------------------------------------------------------------------------
def table(results: dict) -> str:
    names = list(results)
    lines = ["| row | " + " | ".join(names) + " |", "|---|" + "---|" * len(names)]

    def add(label, fn):
        cells = []
        for n in names:
            try:
                cells.append(fn(results[n]))
            except (KeyError, TypeError):  # not measured (e.g. no 2-process run)
                cells.append("-")
        lines.append(f"| {label} | " + " | ".join(cells) + " |")

    add("frames (episodes)", lambda r: f"{r['frames']} ({len(r['rewards']['ms2_episode_sums'])})")
    add("rewards: per-step max abs diff (steps differing)",
        lambda r: f"{r['rewards']['max_abs_diff']:.3g} ({r['rewards']['steps_differing']}/{r['rewards']['steps']})")
    add("rewards: sum over episodes ML2L / ms2flow", lambda r: f"{sum(r['rewards']['ml2l_episode_sums']):.3f} / "
        f"{sum(r['rewards']['ms2_episode_sums']):.3f}")
    add("dones vs terminated / success (mismatching steps)",
        lambda r: f"{r['dones']['dones_vs_terminated_mismatches']} / {r['dones']['dones_vs_success_mismatches']}")
    add("episode_dones vs episode ends; cut vs truncated", lambda r: (
        f"{r['dones']['episode_dones_vs_episode_ends_mismatches']}; {r['dones']['cut_vs_truncated_mismatches']}"))
    add("episodes terminated + cut: ML2L / ms2flow",
        lambda r: f"{r['dones']['ml2l_terminated_episodes']}+{r['dones']['ml2l_cut_episodes']} / "
                  f"{r['dones']['ms2_terminated_episodes']}+{r['dones']['ms2_truncated_episodes']}")
    add("obs keys (state dim)", lambda r: ", ".join(k[4:] for k in r["layout"]["obs_keys"])
        + f" ({r['layout']['state_dim']})")
    add("keys only ML2L / only ms2flow",
        lambda r: f"{', '.join(r['layout']['only_ml2l']) or '-'} / {', '.join(r['layout']['only_ms2']) or '-'}")
    add("shapes and dtypes equal", lambda r: "yes" if r["layout"]["shapes_and_dtypes_equal"] else "NO")
    add("max abs diff (key); within tolerance", lambda r: f"{r['layout']['max_abs_diff']:.3g} "
        f"({r['layout']['max_abs_diff_key']}); {'yes' if r['layout']['within_tolerance'] else 'NO'}")
    add("xyz per-frame centroid diff, mm", lambda r: f"{r['layout']['xyz_centroid_mm']:.2f}"
        if r["layout"]["xyz_centroid_mm"] is not None else "-")
    add("bytes/frame ms2flow / ML2L (ratio)", lambda r: f"{r['storage']['ms2_bytes_per_frame']:.0f} / "
        f"{r['storage']['ml2l_bytes_per_frame']:.0f} ({r['storage']['size_ratio']:.2f}x)")
    add("random 256-batches/s ms2flow / ML2L h5py (ratio)", lambda r: f"{r['storage']['ms2_random_per_s']:.1f} / "
        f"{r['storage']['ml2l_random_per_s']:.1f} ({r['storage']['random_ratio']:.2f}x)")
    add("random, ms2flow's chunk cache off / ML2L h5py (ratio)", lambda r: (
        f"{r['storage']['ms2_random_nocache_per_s']:.1f} / {r['storage']['ml2l_random_per_s']:.1f} "
        f"({r['storage']['ms2_random_nocache_per_s'] / r['storage']['ml2l_random_per_s']:.2f}x)"))
    for kind, label in (("dynamic", "DemoDataset dynamic / ReplayMemory dynamic_loading"),
                        ("ram", "DemoDataset ram / ReplayMemory in RAM")):
        add(f"{label}, batches/s (ratio)", lambda r, k=kind: f"{r['storage'][f'ms2_{k}_per_s']:.1f} / "
            f"{r['storage'][f'ml2l_{k}_per_s']:.1f} ({r['storage'][f'{k}_ratio']:.2f}x)")
    for n in (1, 2):
        add(f"render frames/s, {n} process(es): ms2flow / ML2L (ratio)",
            lambda r, n=n: f"{r['render'][f'ms2_{n}_frames_per_s']:.2f} / {r['render'][f'ml2l_{n}_frames_per_s']:.2f} "
                           f"({r['render'][f'ratio_{n}']:.2f}x)")
    add("1 -> 2 processes: ms2flow / ML2L", lambda r: f"{r['render']['ms2_scaling_1_to_2']:.2f}x / "
        f"{r['render']['ml2l_scaling_1_to_2']:.2f}x")
    def by_process_count(r: dict) -> str:
        c = r["process_counts"]
        return (f"{c['ml2l_rewards_max_abs_diff']:.2g} ({c['ml2l_rewards_steps_differing']}) / "
                f"{c['ms2_rewards_max_abs_diff']:.2g} ({c['ms2_rewards_steps_differing']})")

    add("rewards, 1 vs 2 processes of one tool: ML2L / ms2flow max abs diff (steps)", by_process_count)
    return "\n".join(lines)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--episodes", type=int, default=8, help="demos (at most 10: convert_state sorts names as text)")
    parser.add_argument("--cut-steps", type=int, default=30, help="steps the last episode is cut to (no success)")
    parser.add_argument("--demo", default=None, help="pd_ee_delta_pose PickCube-v0 pair to take them from "
                                                     "(default: generate and replay them here)")
    parser.add_argument("--configs", nargs="+", default=list(CONFIGS), choices=list(CONFIGS))
    parser.add_argument("--scaling", nargs="*", default=list(CONFIGS), choices=list(CONFIGS),
                        help="configurations also rendered with 2 processes (others: 1)")
    parser.add_argument("--batches", type=int, default=40)
    parser.add_argument("--timeout-s", type=float, default=600, help="per render command")
    parser.add_argument("--ml2l-repo", default="/tmp/ML2L")
    parser.add_argument("--ml2l-python", default="/tmp/ml2l-venv/bin/python")
    parser.add_argument("--keep", default=None, help="keep the work directory here")
    parser.add_argument("--compare-only", action="store_true",
                        help="compare the outputs a --keep run left, with its render rows from the results file")
    return parser.parse_args()


def _render_rows(args, ml2l: Ml2lTool, work: Path) -> dict[str, dict]:
    """Render every configuration with both tools (or, with --compare-only, the last run's measurements)."""
    from ms2core.validation.demos import require_sound_demos

    if args.compare_only:
        import json

        from benchmarks._common import RESULTS_DIR

        last = json.loads((RESULTS_DIR / "ml2l_side_by_side.json").read_text())
        return {name: {**last["results"][name]["render"], "rendered_at": last["results"][name]["render"].get(
            "rendered_at", last["when"])} for name in args.configs}
    demo = make_demos(work, args.episodes, args.cut_steps, args.demo)
    require_sound_demos(demo)  # a pair that fails the demo checks stops here, before any timed run
    return {name: render_runs(ml2l, demo, work, name, [1, 2] if name in args.scaling else [1], args.timeout_s)
            for name in args.configs}


def main() -> None:
    args = parse_args()
    if args.episodes > 10:
        raise SystemExit("--episodes at most 10: convert_state orders traj_10 before traj_2")
    if args.compare_only and not args.keep:
        raise SystemExit("--compare-only needs --keep DIR: the work directory of an earlier --keep run")
    work = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="ms2-ml2l-side-"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        renders = _render_rows(args, Ml2lTool(Path(args.ml2l_repo), args.ml2l_python), work)
        results = {name: {**compare_config(work, name, args.batches), "render": row} for name, row in renders.items()}
        text = table(results)
        print(text)
        path = write_result("ml2l_side_by_side", dict(
            env_id=ENV_ID, control_mode=CONTROL_MODE, episodes=args.episodes, cut_steps=args.cut_steps,
            batch=storage_reads.BATCH, cpus=os.cpu_count(), load_average=os.getloadavg(),
            tolerances=dict(rewards=0.0, dones="exact", float_arrays=FLOAT_TOL, actions_images=0.0),
            configs={n: dict(ms2_config=CONFIGS[n][0], ms2_set=CONFIGS[n][1], ml2l_args=CONFIGS[n][2])
                     for n in results},
            results=results, table=text))
        print(f"wrote {path}")
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
