#!/usr/bin/env bash
# Issue 19's GPU-host benchmarks, one device command per step (run from the repository root):
#
#   bash benchmarks/gpu_campaign.sh prepare  # HERE, not on the device: builds the git-ignored inputs below
#   bash benchmarks/gpu_campaign.sh setup    # twice: 1st call carries runtime part .000, 2nd the rest; unpacks
#   bash benchmarks/gpu_campaign.sh render   # ms2 render's pipeline 1/8/16 workers vs raw + CPU/GPU agreement
#   bash benchmarks/gpu_campaign.sh eval     # point-cloud BC (trained there) on 100 episodes, 16 workers
#   bash benchmarks/gpu_campaign.sh ppo      # PPO env steps/s, state and point cloud, 16 workers, CUDA learner
#   bash benchmarks/gpu_campaign.sh rollout  # where a lock-step state round goes (benchmarks/rollout_barrier.py)
#   bash benchmarks/gpu_campaign.sh train    # issue 20: TRAIN_CONFIG through the train stage, TRAIN_RESUME=ckpt
#                                            # point clouds: TRAIN_CONFIG=configs/ppo/pickcube_pointcloud_gpu_h50.yaml;
#                                            # DAPG: TRAIN_ALGO=dapg TRAIN_CONFIG=configs/dapg/pickcube_pointcloud_gpu_h50.yaml
#                                            # after `dataset` on DATASET_DEMOS=.gpu_inputs/dapg_demos/mplib...h5
#   bash benchmarks/gpu_campaign.sh sweep    # issue 20: SWEEP_VARIANTS="a:k=v;b:k=v" train runs side by side
#   bash benchmarks/gpu_campaign.sh continue # then: the best variant (or SWEEP_CHOICE) resumed on 16 workers
#   bash benchmarks/gpu_campaign.sh dataset  # issue 20: DATASET_DEMOS rendered (configs/render/pointcloud.yaml:
#                                            # ee frame, 50 goal points) + validated; eval then trains BC on it
#
# Each step writes small JSON files (and its log) under $OUT, bounds every wait (MS2FLOW_SIM_CALL_TIMEOUT_S,
# `timeout` around every process) and the whole step by STEP_LIMIT_S (default 500 s < 9 min).
# Inputs (git-ignored, carried): .runtime_parts/ (ms2 runtime pack), .gpu_inputs/{gl,whl,demos,
# cpu_store_seed0.zarr,cpu_store_seed1.zarr,bc_store.zarr}. Knobs (a CPU smoke test sets them tiny): MS2RT,
# HOST_PYTHON, OUT, GPU_INPUTS, STEP_LIMIT_S, RENDER_{DEMOS,WORKERS (none: agreement only),EPISODES}, EVAL_{CHECKPOINT,TRAIN_STORE,
# TRAIN_STEPS,EPISODES,WORKERS,DEVICE,MAX_EPISODE_STEPS}, PPO_{OBS_MODES,WORKERS,NUM_ENVS,DEVICE,ENV_STEPS,
# ROLLOUT_STEPS,MAX_EPISODE_STEPS}. CPU smoke test (2 cores, lavapipe, the runtime unpacked at /tmp):
#   OUT=/tmp/o MS2RT=/tmp/ms2rt HOST_PYTHON=.venv/bin/python RENDER_WORKERS=1,2 RENDER_EPISODES=2 \
#   EVAL_EPISODES=4 EVAL_WORKERS=2 EVAL_MAX_EPISODE_STEPS=20 PPO_ENV_STEPS=64 PPO_ROLLOUT_STEPS=32 PPO_WORKERS=2 \
#   PPO_NUM_ENVS=2 PPO_MAX_EPISODE_STEPS=20 bash benchmarks/gpu_campaign.sh render   # (and eval, ppo)
set -u
step=${1:?usage: gpu_campaign.sh prepare|setup|render|eval|ppo|rollout|train|sweep|continue|dataset}
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
OUT=${OUT:-$root/.device_out}
RT=${MS2RT:-/opt/ms2rt}
STAGE=${MS2RT_PARTS_STAGE:-/tmp/ms2rt-parts}
INPUTS=${GPU_INPUTS:-$root/.gpu_inputs}
HOST_PYTHON=${HOST_PYTHON:-python3}
HOST_SITE=${MS2FLOW_HOST_SITE:-/tmp/ms2host-site}
STEP_LIMIT_S=${STEP_LIMIT_S:-500}
KEPT_STORE=${KEPT_STORE:-/tmp/ms2-gpu-render-pointcloud.zarr}  # render keeps its last store here; eval trains on it
SWEEP_KEEP=${SWEEP_KEEP:-/tmp/ms2-sweep}  # sweep keeps its variants' run dirs here; continue resumes one of them
DATASET_STORE=${DATASET_STORE:-/tmp/ms2-gpu-dataset-pointcloud.zarr}  # the dataset step's store; eval prefers it
: "${TRAIN_ALGO:=ppo}" "${TRAIN_CONFIG:=configs/ppo/pickcube_state_gpu_h50.yaml}"  # train, sweep, continue
mkdir -p "$OUT"
export PYTHONPATH=$root PYTHONUNBUFFERED=1 MS2FLOW_SIM_CALL_TIMEOUT_S=${MS2FLOW_SIM_CALL_TIMEOUT_S:-120}
nvidia_icd=/usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json
[ -f "$nvidia_icd" ] && export VK_DRIVER_FILES=${VK_DRIVER_FILES:-$nvidia_icd}
log="$OUT/$step.log"
started=$(date +%s)

note() { echo "[$(date +%H:%M:%S) +$(( $(date +%s) - started ))s] $*" | tee -a "$log"; }
left() { echo $(( STEP_LIMIT_S - ($(date +%s) - started) )); }
# run LIMIT_S CMD...: the command under `timeout` (never past the step's own limit), output to the log
run() {
  local limit=$1; shift
  local l; l=$(left); [ "$limit" -gt "$l" ] && limit=$l
  [ "$limit" -le 5 ] && { note "no time left for: $*"; return 124; }
  note "run (<= ${limit}s): $*"
  timeout -k 10 "$limit" "$@" >>"$log" 2>&1
  local rc=$?
  note "exit $rc"
  return $rc
}
need_runtime() {
  [ -x "$RT/bin/python" ] || { note "no simulator runtime at $RT: run 'setup' first (twice, carrying the parts)"; exit 3; }
}
# The learner side (host Python) needs pydantic, optree, zarr, gymnasium... carried as cp312 wheels. They go to
# HOST_SITE and reach only the learner (benchmarks/_gpu_host.py puts MS2FLOW_HOST_SITE on sys.path), never the
# runtime's 3.11 workers, which would otherwise import cp312 binaries through PYTHONPATH.
need_host_packages() {
  if ! "$HOST_PYTHON" -c "import pydantic, optree, zarr, gymnasium" >/dev/null 2>&1; then
    if [ ! -f "$HOST_SITE/.installed" ]; then
      [ -d "$INPUTS/whl" ] || { note "host python lacks pydantic/optree/zarr/gymnasium and $INPUTS/whl was not carried"; exit 3; }
      run 120 "$HOST_PYTHON" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target "$HOST_SITE" "$INPUTS"/whl/*.whl || exit 3
      touch "$HOST_SITE/.installed"
    fi
    export MS2FLOW_HOST_SITE=$HOST_SITE
  fi
}

# The learner's packages the GPU host's Python 3.12 lacks (with torch and numpy 2 it has), as cp312 wheels at
# constraints.txt's pins; gymnasium's cv2 import is optional.
HOST_WHEELS="pydantic pydantic_core annotated_types typing_extensions typing_inspection optree zarr numcodecs donfig
  google_crc32c msgpack gymnasium cloudpickle farama_notifications tqdm pyyaml packaging fsspec"

case "$step" in
prepare)
  # On a checkout (git-ignored inputs are not kept between checkouts): the simulator runtime's xz parts,
  # Debian's Vulkan/GL loader packages for the GPU host, and the learner's wheels. Skips what exists.
  venv=${VENV:-$root/.venv}
  if [ ! -f .runtime_parts/runtime-manifest.json ]; then
    "$venv/bin/ms2" runtime pack --out .runtime_parts || exit 4
  fi
  mkdir -p "$INPUTS/gl" "$INPUTS/whl"
  if ! ls "$INPUTS"/gl/libvulkan1_*.deb >/dev/null 2>&1; then
    (cd "$INPUTS/gl" && apt-get download libvulkan1 libegl1 libglvnd0 libopengl0 libgl1 libglx0 libgles2) || exit 4
  fi
  pins=()
  for pkg in $HOST_WHEELS; do
    pin=$(grep -i -m1 "^${pkg//_/[-_]}==" constraints.txt) || { note "no pin for $pkg in constraints.txt"; exit 4; }
    pins+=("$pin")
  done
  PIP_CONSTRAINT= "$venv/bin/python" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
    --implementation cp --abi cp312 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
    --platform manylinux_2_28_x86_64 --platform any -d "$INPUTS/whl" "${pins[@]}" || exit 4
  du -sh .runtime_parts "$INPUTS"/gl "$INPUTS"/whl
  ;;
setup)
  mkdir -p "$STAGE"
  for f in "$root"/.runtime_parts/*; do [ -f "$f" ] && cp -n "$f" "$STAGE/"; done
  if ! ldconfig -p 2>/dev/null | grep -q libvulkan.so.1; then
    if ls "$INPUTS"/gl/*.deb >/dev/null 2>&1; then
      for d in "$INPUTS"/gl/*.deb; do dpkg -x "$d" /; done; ldconfig; note "Vulkan loader unpacked from $INPUTS/gl"
    else
      note "no libvulkan.so.1 on this host and no $INPUTS/gl/*.deb carried (carry .gpu_inputs/gl)"
    fi
  fi
  missing=$("$HOST_PYTHON" - "$STAGE" <<'EOF'
import json, sys
from pathlib import Path
stage = Path(sys.argv[1])
m = stage / "runtime-manifest.json"
names = [p["name"] for p in json.loads(m.read_text())["parts"]] if m.exists() else []
print(" ".join([n for n in names if not (stage / n).exists()] + ([] if m.exists() else ["runtime-manifest.json (and the parts it lists)"])))
EOF
)
  if [ -x "$RT/bin/python" ]; then
    note "runtime already unpacked at $RT"
  elif [ -n "$missing" ]; then
    note "staged in $STAGE: $(ls "$STAGE" | tr '\n' ' '); still missing: $missing (carry them in the next call)"
  else
    run 180 "$HOST_PYTHON" -m ms2core.runtime unpack "$STAGE" --prefix "$RT" || exit 4
  fi
  if [ -x "$RT/bin/python" ]; then
    PYTHONPATH=$root timeout 120 "$RT/bin/ms2-sim" doctor --json >"$OUT/doctor.json" 2>>"$log"
    note "doctor exit $? (doctor.json)"
  fi
  "$HOST_PYTHON" - "$OUT/setup.json" "$RT" "$missing" <<'EOF'
import json, os, sys
out, rt, missing = sys.argv[1], sys.argv[2], sys.argv[3].split()
json.dump(dict(runtime=rt, unpacked=os.path.exists(f"{rt}/bin/python"), missing_parts=missing,
               vk_driver_files=os.environ.get("VK_DRIVER_FILES")), open(out, "w"), indent=1)
EOF
  ;;
render)
  need_runtime
  demos=${RENDER_DEMOS:-$INPUTS/demos/mplib.s0.n120.none.pd_ee_delta_pose.h5}
  work=$(mktemp -d /tmp/gpu-render-XXXX)
  # item 3 first (short): the same 4 demos as the carried CPU stores, seed 0, compared with them
  run 150 "$RT/bin/python" -m benchmarks.gpu_render store --demos "$demos" --episodes 4 --seed 0 \
    --out "$work/gpu_store_seed0.zarr"
  if [ -d "$INPUTS/cpu_store_seed0.zarr" ]; then
    run 120 "$RT/bin/python" -m benchmarks.gpu_render compare --reference "$INPUTS/cpu_store_seed0.zarr" \
      --other "$work/gpu_store_seed0.zarr" --resampled "$INPUTS/cpu_store_seed1.zarr" --out "$OUT/render_agreement.json"
    run 60 "$RT/bin/python" -m benchmarks.gpu_render fingerprint --out "$OUT/float_fingerprint.json"
    lscpu >"$OUT/lscpu.txt" 2>&1  # which CPU the physics ran on (rewards are not bit-identical across these hosts)
  else
    note "no $INPUTS/cpu_store_seed0.zarr carried: agreement not checked"
  fi
  budget=$(( $(left) - 60 ))
  [ "${RENDER_WORKERS:-}" = none ] || run "$(left)" "$RT/bin/python" -m benchmarks.gpu_render bench --demos "$demos" \
    --workers "${RENDER_WORKERS:-1,8,16}" --episodes "${RENDER_EPISODES:-100}" --out "$OUT" --work-dir "$work" \
    --budget-s "$budget" --phase-timeout-s "${RENDER_PHASE_TIMEOUT_S:-200}" --keep-store "$KEPT_STORE"
  rm -rf "$work"
  ;;
eval)
  need_runtime
  need_host_packages
  if [ -n "${EVAL_CHECKPOINT:-}" ]; then src=(--checkpoint "$EVAL_CHECKPOINT")
  else
    store=${EVAL_TRAIN_STORE:-}
    [ -z "$store" ] && [ -d "$DATASET_STORE" ] && store=$DATASET_STORE  # the dataset step's demos
    [ -z "$store" ] && [ -d "$KEPT_STORE" ] && store=$KEPT_STORE  # the render step's 100 demos
    [ -z "$store" ] && store=$INPUTS/bc_store.zarr                # else the carried 3-episode store
    note "BC trains on $store"
    src=(--train-store "$store" --train-steps "${EVAL_TRAIN_STEPS:-5000}")
  fi
  extra=(); [ -n "${EVAL_MAX_EPISODE_STEPS:-}" ] && extra=(--max-episode-steps "$EVAL_MAX_EPISODE_STEPS")
  run "$(left)" "$HOST_PYTHON" -m benchmarks.gpu_eval "${src[@]}" --episodes "${EVAL_EPISODES:-100}" \
    --workers "${EVAL_WORKERS:-16}" --sim-python "$RT/bin/python" --device "${EVAL_DEVICE:-auto}" \
    --out "$OUT/eval" "${extra[@]}"
  cp "$OUT/eval/gpu_eval.json" "$OUT/" 2>/dev/null
  rm -rf "$OUT/eval/ms2data"  # the trained checkpoint stays there; eval/eval/result.json comes back
  ;;
ppo)
  need_runtime
  need_host_packages
  extra=()
  [ -n "${PPO_ENV_STEPS:-}" ] && extra+=(--env-steps "$PPO_ENV_STEPS")
  [ -n "${PPO_ROLLOUT_STEPS:-}" ] && extra+=(--rollout-steps "$PPO_ROLLOUT_STEPS")
  [ -n "${PPO_MAX_EPISODE_STEPS:-}" ] && extra+=(--max-episode-steps "$PPO_MAX_EPISODE_STEPS")
  run "$(left)" "$HOST_PYTHON" -m benchmarks.gpu_ppo --obs-modes "${PPO_OBS_MODES:-state,pointcloud}" \
    --workers "${PPO_WORKERS:-16}" --num-envs "${PPO_NUM_ENVS:-16}" --sim-python "$RT/bin/python" \
    --device "${PPO_DEVICE:-auto}" --out "$OUT/ppo" "${extra[@]}"
  cp "$OUT/ppo/gpu_ppo.json" "$OUT/" 2>/dev/null
  rm -rf "$OUT"/ppo/ppo_*  # checkpoints
  ;;
rollout)
  # issue 19: the PPO state rollout's gap to raw stepping, taken apart: the pool alone under the runtime for a
  # few layouts, then the same pool driven from the host's Python with a CUDA policy forward per round
  need_runtime
  run $(( $(left) * 2 / 3 )) "$RT/bin/python" -m benchmarks.rollout_barrier \
    --layouts "${ROLLOUT_LAYOUTS:-64x16,64x15,64x8,128x16,16x16}" --rounds "${ROLLOUT_ROUNDS:-150}" \
    --budget-s $(( $(left) / 2 )) --out "$OUT/rollout_runtime" ${ROLLOUT_POLICY_WEIGHTS:+--policy-weights "$ROLLOUT_POLICY_WEIGHTS"}
  [ "${ROLLOUT_HOST_LAYOUTS:-}" = none ] && { note "step rollout done (runtime part only)"; exit 0; }
  need_host_packages
  run "$(left)" "$HOST_PYTHON" -m benchmarks.rollout_barrier --layouts "${ROLLOUT_HOST_LAYOUTS:-64x16}" \
    --rounds "${ROLLOUT_ROUNDS:-150}" --sim-python "$RT/bin/python" --policy-device "${ROLLOUT_POLICY_DEVICE:-cuda}" \
    --budget-s 60 --out "$OUT/rollout_host"
  run "$(left)" "$HOST_PYTHON" -m benchmarks.rollout_barrier --layouts "${ROLLOUT_HOST_LAYOUTS:-64x16}" \
    --rounds "${ROLLOUT_ROUNDS:-150}" --sim-python "$RT/bin/python" --policy-device "${ROLLOUT_POLICY_DEVICE:-cuda}" \
    --parent-threads 0 --budget-s 60 --out "$OUT/rollout_host_torch_threads"
  ;;
train)
  # issue 20: a long run through the train stage, stopped cleanly (run.stop_after_s) before this step's limit;
  # TRAIN_RESUME=<carried checkpoint> continues it. The run dir (checkpoint, metrics) comes back in $OUT/train.
  need_runtime
  need_host_packages
  resume=(); [ -n "${TRAIN_RESUME:-}" ] && resume=(--resume-from "$TRAIN_RESUME")
  sets=(); for s in ${TRAIN_SET:-}; do sets+=(--set "$s"); done
  run "$(left)" "$HOST_PYTHON" -m benchmarks.gpu_train --algo "$TRAIN_ALGO" \
    --config "$TRAIN_CONFIG" --sim-python "$RT/bin/python" \
    --out "${TRAIN_OUT:-$OUT/train}" --stop-after-s $(( $(left) - ${TRAIN_MARGIN_S:-50} )) "${resume[@]}" "${sets[@]}" || exit $?
  ;;
sweep)
  # issue 20: several train runs side by side (one command, the host's cores split between them), to compare
  # settings over the same env steps: SWEEP_VARIANTS="name1:k=v k=v;name2:k=v" on top of TRAIN_SET, each a
  # train step of its own (TRAIN_ALGO, TRAIN_CONFIG, TRAIN_RESUME as there) with rollout.num_procs =
  # SWEEP_PROCS (default 16 / the number of variants); each variant's log and run dir under $OUT/<name>/ while it
  # runs, then all results in $OUT/sweep.json and the run dirs in $OUT/sweep_runs.tar (the device returns 8 files).
  need_runtime
  need_host_packages
  IFS=';' read -ra variants <<<"${SWEEP_VARIANTS:?SWEEP_VARIANTS=name:k=v ...;name:k=v}"
  procs=${SWEEP_PROCS:-$(( 16 / ${#variants[@]} ))}; [ "$procs" -ge 1 ] || procs=1
  # kept on this host for `continue` (the next command on a warm machine): this sweep's variants only, each
  # with its overrides and, once it ends, its run dir
  rm -rf "$SWEEP_KEEP"
  pids=(); names=()
  for v in "${variants[@]}"; do
    name=${v%%:*}; extra=${v#*:}; [ "$extra" = "$v" ] && extra=
    note "variant $name: ${TRAIN_SET:-} $extra rollout.num_procs=$procs"
    mkdir -p "$SWEEP_KEEP/$name"; echo "${TRAIN_SET:-} $extra" >"$SWEEP_KEEP/$name/overrides"
    # what `continue` must resume with (a checkpoint resumed under another algorithm or config is refused)
    printf 'TRAIN_ALGO=%q\nTRAIN_CONFIG=%q\n' "$TRAIN_ALGO" "$TRAIN_CONFIG" >"$SWEEP_KEEP/$name/train.env"
    vdir="$OUT/$name"  # (one prefix assignment sees the one before it: never OUT=$OUT/x TRAIN_OUT=$OUT/x)
    OUT="$vdir" TRAIN_OUT="$vdir" STEP_LIMIT_S=$(left) TRAIN_SET="${TRAIN_SET:-} $extra rollout.num_procs=$procs" \
      bash "$0" train &
    pids+=($!); names+=("$name")
  done
  rc=0; for pid in "${pids[@]}"; do wait "$pid" || rc=$?; done
  note "variants exit $rc"
  for name in "${names[@]}"; do cp -r "$OUT/$name/run" "$OUT/$name/gpu_train.json" "$SWEEP_KEEP/$name/" 2>/dev/null; done
  # at most 8 files come back from a device command: every variant's result in sweep.json, their run dirs and
  # logs in one tar (each variant stays kept on this host for `continue`)
  "$HOST_PYTHON" - "$OUT" "${names[@]}" <<'EOF'
import json, sys
from pathlib import Path
out, names = Path(sys.argv[1]), sys.argv[2:]
found = {n: json.loads((out / n / "gpu_train.json").read_text()) for n in names if (out / n / "gpu_train.json").exists()}
(out / "sweep.json").write_text(json.dumps(dict(variants=found, missing=[n for n in names if n not in found]), indent=1))
EOF
  tar -cf "$OUT/sweep_runs.tar" -C "$OUT" "${names[@]}" && (cd "$OUT" && rm -rf "${names[@]}")
  exit $rc
  ;;
continue)
  # issue 20: resume one sweep variant on all the host's workers: SWEEP_CHOICE, else the one chosen by an
  # earlier `continue`, else the highest mean success over its last SWEEP_LAST_EVALS (3) periodic evaluations;
  # CONTINUE_SET adds overrides (e.g. a larger run.total_env_steps).
  need_runtime
  need_host_packages
  choice=${SWEEP_CHOICE:-$(cat "$SWEEP_KEEP/chosen" 2>/dev/null)}
  if [ -z "$choice" ]; then
    choice=$("$HOST_PYTHON" - "$SWEEP_KEEP" "${SWEEP_LAST_EVALS:-3}" <<'EOF'
import json, sys
from pathlib import Path
keep, last = Path(sys.argv[1]), int(sys.argv[2])
score = {}
for f in keep.glob("*/gpu_train.json"):
    curve = json.loads(f.read_text())["eval_curve"][-last:]
    score[f.parent.name] = sum(e["success_rate"] for e in curve) / max(1, len(curve))
print(max(score, key=score.get) if score else "")
EOF
)
  fi
  [ -n "$choice" ] && [ -f "$SWEEP_KEEP/$choice/run/checkpoint.pt" ] || {
    note "no sweep variant to continue in $SWEEP_KEEP (run sweep first on this machine)"; exit 3; }
  echo "$choice" >"$SWEEP_KEEP/chosen"
  note "continuing variant $choice from $SWEEP_KEEP/$choice"
  # the sweep's algorithm and config, whatever this command's environment says
  set -a; [ -f "$SWEEP_KEEP/$choice/train.env" ] && . "$SWEEP_KEEP/$choice/train.env"; set +a
  TRAIN_RESUME="$SWEEP_KEEP/$choice/run/checkpoint.pt" TRAIN_SET="$(cat "$SWEEP_KEEP/$choice/overrides") ${CONTINUE_SET:-} rollout.num_procs=${CONTINUE_PROCS:-16}" \
    STEP_LIMIT_S=$(left) TRAIN_OUT="$OUT/$choice" OUT="$OUT/$choice" bash "$0" train
  rc=$?
  # the kept run is replaced only by one that has a checkpoint (a run that failed before writing one leaves the
  # kept checkpoint where it was, for the next command)
  if [ -f "$OUT/$choice/run/checkpoint.pt" ]; then
    rm -rf "$SWEEP_KEEP/$choice/run.new"; cp -r "$OUT/$choice/run" "$SWEEP_KEEP/$choice/run.new" &&
      rm -rf "$SWEEP_KEEP/$choice/run" && mv "$SWEEP_KEEP/$choice/run.new" "$SWEEP_KEEP/$choice/run" &&
      cp "$OUT/$choice/gpu_train.json" "$SWEEP_KEEP/$choice/" 2>/dev/null
  else
    note "no new checkpoint (exit $rc): $SWEEP_KEEP/$choice/run kept as it was"
  fi
  exit $rc
  ;;
dataset)
  # issue 20 item 4: a training dataset made here as ms2 render --config + ms2 validate make it, from a carried
  # demo pair (default: the PPO state policy's 1060 successful episodes, .gpu_inputs/ppo_demos/), at
  # $DATASET_STORE for the eval step: EVAL_TRAIN_STEPS=50000 bash benchmarks/gpu_campaign.sh eval
  need_runtime
  demos=${DATASET_DEMOS:-$INPUTS/ppo_demos/ppo_h50_4982k.s20000.n1100.success.h5}
  extra=()
  [ -n "${DATASET_ANY_OUTCOME:-}" ] && extra+=(--any-outcome)
  [ -n "${DATASET_EPISODES:-}" ] && extra+=(--episodes "$DATASET_EPISODES")
  run "$(left)" "$RT/bin/python" -m benchmarks.gpu_render dataset --demos "$demos" \
    --render-config "${DATASET_RENDER_CONFIG:-configs/render/pointcloud.yaml}" --workers-n "${DATASET_WORKERS:-16}" \
    --store "$DATASET_STORE" --out "$OUT" "${extra[@]}"
  ;;
*)
  echo "unknown step $step: setup|render|eval|ppo|rollout|train|sweep|continue|dataset" >&2; exit 2 ;;
esac
note "step $step done"
