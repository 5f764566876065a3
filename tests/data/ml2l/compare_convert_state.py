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
"""

from __future__ import annotations

import sys

import h5py
import numpy as np


def datasets(group: h5py.Group) -> dict[str, h5py.Dataset]:
    out: dict[str, h5py.Dataset] = {}
    group.visititems(lambda name, item: out.__setitem__(name.replace("dict_str_", ""), item)
                     if isinstance(item, h5py.Dataset) else None)
    return out


def main(ml2l_path: str, ms2_path: str) -> None:
    with h5py.File(ml2l_path) as theirs, h5py.File(ms2_path) as ours:
        for traj in sorted(theirs, key=lambda k: int(k.split("_")[-1])):
            a, b = datasets(theirs[traj]), datasets(ours[traj])
            print(traj, "only ML2L:", sorted(set(a) - set(b)), "only ms2flow:", sorted(set(b) - set(a)))
            for key in sorted(set(a) & set(b)):
                x, y = a[key][()], b[key][()]
                line = f"  {key:26s} ML2L {x.shape!s:18s} {x.dtype!s:8s} ms2flow {y.shape!s:18s} {y.dtype!s:8s}"
                if x.shape == y.shape and key == "obs/xyz" and x.shape[1] > 1200:
                    c = np.abs(x[:, :1200].mean(1) - y[:, :1200].mean(1))
                    line += f" per-frame centroid |diff| mean {c.mean() * 1e3:.2f} mm"
                elif x.shape == y.shape and key not in ("rewards", "dones", "obs/rgb") or key == "obs/rgb" and x.dtype == np.uint8:
                    line += f" max |diff| {np.abs(x.astype(np.float64) - y.astype(np.float64)).max():.3g}"
                print(line)


if __name__ == "__main__":
    main(*sys.argv[1:3])
