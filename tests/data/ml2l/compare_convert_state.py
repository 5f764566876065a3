"""Side by side: ManiSkill2-Learn's convert_state output vs ``ms2 render`` (obs_layout ml2l) + ``ms2 export-h5``.

Not a test (it needs ML2L's side venv for the first file); how the README's layout table was checked::

    # ML2L (side venv, real PickCube-v0): 2 demos, point clouds in the ee frame + 50 goal points
    cd /tmp/ML2L && MS2FLOW_VK_CPU_LAYER=1 XDG_DATA_DIRS=$VENV/share:/usr/share \\
        PYTHONPATH=/tmp/ML2L:$REPO/tests/data/ml2l/side_env_stubs /tmp/ml2l-venv/bin/python tools/convert_state.py \\
        --env-name PickCube-v0 --traj-name DEMO.h5 --json-name DEMO.json --output-name ml2l.h5 --obs-mode pointcloud \\
        --control-mode pd_ee_delta_pose --obs-frame ee --n-points 1200 --n-goal-points 50 --max-num-traj 2
    # ms2flow
    ms2 render DEMO.h5 --config configs/render/pointcloud_ml2l.yaml --store ms2.zarr --set options.max_episodes=2
    ms2 export-h5 ms2.zarr ms2.h5
    python tests/data/ml2l/compare_convert_state.py ml2l.h5 ms2.h5

Prints, per episode and dataset, both shapes and dtypes and the largest difference (random point
subsets are compared by their centroids). ML2L's h5 keys carry GDict's ``dict_str_`` prefix.
``compare`` returns the same as records (benchmarks/ml2l_side_by_side.py builds its table from them).
"""

from __future__ import annotations

import sys

import h5py
import numpy as np

N_POINTS = 1200  # convert_state's --n-points: the downsampled points, before the goal points


def datasets(group: h5py.Group) -> dict[str, h5py.Dataset]:
    out: dict[str, h5py.Dataset] = {}
    group.visititems(lambda name, item: out.__setitem__(name.replace("dict_str_", ""), item)
                     if isinstance(item, h5py.Dataset) else None)
    return out


def compare_key(key: str, x: np.ndarray, y: np.ndarray) -> dict:
    """Shapes, dtypes and the largest difference of one dataset (ML2L ``x``, ms2flow ``y``).

    ``diff`` is ``max_abs`` for arrays the two tools must hold equally, ``centroid_mm`` (mean per-frame
    centroid distance of the downsampled points) for point xyz, whose points are a random subset, and
    None where no element-wise comparison means anything (float point rgb: random subset; rewards and
    dones: compared on their own)."""
    row = dict(key=key, ml2l_shape=list(x.shape), ml2l_dtype=str(x.dtype), ms2_shape=list(y.shape),
               ms2_dtype=str(y.dtype), diff_kind=None, diff=None)
    if x.shape != y.shape:
        return row
    if key == "obs/xyz" and x.ndim == 3:
        row.update(diff_kind="centroid_mm",
                   diff=float(np.abs(x[:, :N_POINTS].mean(1) - y[:, :N_POINTS].mean(1)).mean() * 1e3))
    elif key not in ("rewards", "dones", "obs/rgb") or key == "obs/rgb" and x.dtype == np.uint8:
        row.update(diff_kind="max_abs", diff=float(np.abs(x.astype(np.float64) - y.astype(np.float64)).max()))
    return row


def compare(ml2l_path: str, ms2_path: str) -> list[dict]:
    """One record per trajectory: its name, the keys only one file has, and ``compare_key`` per shared key."""
    out = []
    with h5py.File(ml2l_path) as theirs, h5py.File(ms2_path) as ours:
        for traj in sorted(theirs, key=lambda k: int(k.split("_")[-1])):
            a, b = datasets(theirs[traj]), datasets(ours[traj])
            out.append(dict(traj=traj, only_ml2l=sorted(set(a) - set(b)), only_ms2=sorted(set(b) - set(a)),
                            keys=[compare_key(k, a[k][()], b[k][()]) for k in sorted(set(a) & set(b))]))
    return out


def main(ml2l_path: str, ms2_path: str) -> None:
    for traj in compare(ml2l_path, ms2_path):
        print(traj["traj"], "only ML2L:", traj["only_ml2l"], "only ms2flow:", traj["only_ms2"])
        for r in traj["keys"]:
            line = (f"  {r['key']:26s} ML2L {tuple(r['ml2l_shape'])!s:18s} {r['ml2l_dtype']:8s} "
                    f"ms2flow {tuple(r['ms2_shape'])!s:18s} {r['ms2_dtype']:8s}")
            if r["diff_kind"] == "centroid_mm":
                line += f" per-frame centroid |diff| mean {r['diff']:.2f} mm"
            elif r["diff_kind"] == "max_abs":
                line += f" max |diff| {r['diff']:.3g}"
            print(line)


if __name__ == "__main__":
    main(*sys.argv[1:3])
