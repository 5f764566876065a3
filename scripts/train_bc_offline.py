"""Train BC from a config with only torch, pydantic, optree and zarr installed (no CLI, Prefect or MLflow):
for a GPU machine that can neither run the simulator nor reach a package index. Prints one JSON line.

    python scripts/train_bc_offline.py RUN_NAME STEPS STORE[,STORE...] [--config configs/bc/pickcube_pointcloud.yaml] \\
        [dotted.override=value ...]

Checkpoints and metrics.jsonl go to a new $MS2FLOW_DATA_DIR/runs/bc/<env>/<RUN_NAME>/<run id>/ as with `ms2 train bc`
(no validation gate here: validate the stores first, where `ms2 validate` runs);
evaluate the checkpoint where the simulator runs (`ms2 evaluate --checkpoint ...`).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ms2core.algos.bc import train  # noqa: E402
from ms2core.config import load_config  # noqa: E402
from storage_schemas.training import BCConfig  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("run_name")
    p.add_argument("steps", type=int)
    p.add_argument("stores", help="comma-separated dataset stores")
    p.add_argument("overrides", nargs="*", help="dotted config overrides, e.g. train.precision=bf16")
    p.add_argument("--config", default="configs/bc/pickcube_pointcloud.yaml")
    args = p.parse_args(argv)
    cfg = load_config(BCConfig, args.config, [f"dataset.paths=[{args.stores}]", f"train.num_steps={args.steps}",
                                              f"run.run_name={args.run_name}", *args.overrides])
    start = time.perf_counter()
    result = train(cfg, progress=False)
    print(json.dumps({"run_name": args.run_name, "wall_s": time.perf_counter() - start,
                      "updates_per_s": result.updates_per_s, "final_loss": result.final_loss,
                      "run_dir": result.run_dir, "config": cfg.model_dump(mode="json")}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
