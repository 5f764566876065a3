"""Training and evaluation contracts: network, dataset, BC and evaluation configs, EvaluationResult.

Every config is a StrictModel (unknown keys are errors). YAML files under
``configs/`` are validated against these models by ``ms2core.config.load_config``
and the fully resolved config is saved with every run and inside every checkpoint.
"""

from __future__ import annotations

import re
from typing import ClassVar, Literal

from pydantic import Field, field_validator, model_validator

from storage_schemas.env import EnvConfig, StrictModel

NetBackbone = Literal["auto", "mlp", "pointnet", "cnn", "frameminer_mixaction"]
HeadKind = Literal["deterministic", "gaussian", "tanh_gaussian"]
DatasetMode = Literal["auto", "ram", "dynamic", "gpu"]
SampleMode = Literal["mean", "sample"]
FrameName = Literal["obs", "tcp", "goal"]


class NetConfig(StrictModel):
    """The networks of every algorithm (section ``net``): an observation encoder (``backbone``), MLP layers
    and the action head. Fields marked BC or PPO/DAPG apply to those algorithms only."""

    backbone: NetBackbone = Field(
        "auto", description="auto (BC: from the obs mode, MLP / PointNet / CNN; online RL: pointnet for point "
        "clouds, else mlp), mlp (flattened obs), pointnet (ManiSkill2-Learn's PointNet), cnn (BC, RGB-D), "
        "frameminer_mixaction (PPO/DAPG: one PointNet per frame, actions mixed by a learned gate)")
    head: HeadKind = Field("deterministic", description="BC: 'deterministic' (MSE, ManiSkill2-Learn's BC) or a "
                                                        "Gaussian head fit by likelihood; online RL ignores it")
    hidden_sizes: list[int] = Field(
        default_factory=lambda: [256, 256],
        description="hidden layer widths of every MLP (the MLP on the state, or after the point/image encoder)")
    pointnet_point_mlp: list[int] = Field(
        default_factory=lambda: [64, 128, 512], description="per-point MLP before the max-pool (ManiSkill2-Learn)"
    )
    cnn_kind: Literal["nature", "impala"] = Field("nature", description="BC, backbone cnn: the image encoder")
    activation: Literal["relu", "elu", "gelu", "tanh"] = "relu"
    normalize_state: bool = Field(True, description="BC: standardise 'state' with dataset mean/std stored in the model")
    depth_max_m: float = Field(4.0, gt=0, description="BC: depth is clipped to [0, depth_max_m] and divided by it")
    init_log_std: float = Field(-0.5, description="Gaussian heads: initial log standard deviation (state-independent)")
    frames: list[FrameName] = Field(
        ["obs", "tcp"], min_length=1, description="frameminer_mixaction: the candidate frames, one PointNet each "
        "(obs = the frame the observation is processed in, tcp = end effector, goal = goal position)"
    )
    mix_gate_hidden: list[int] = Field([192], description="frameminer_mixaction: hidden widths of the mixing gate")
    shared_backbone: bool = Field(
        False, description="PPO: actor and critic share the observation encoder (ManiSkill2-Learn point cloud: True)"
    )
    detach_actor_feature: bool = Field(
        False, description="PPO with shared backbone: the actor's loss does not train the shared encoder"
    )

    @model_validator(mode="after")
    def _positive_sizes(self):
        for name in ("hidden_sizes", "pointnet_point_mlp"):
            sizes = getattr(self, name)
            if any(s <= 0 for s in sizes):
                raise ValueError(f"{name} must hold positive layer widths, got {sizes}")
        return self


_CUDA_DEVICE = re.compile(r"cuda:\d+")


def check_devices(value):
    """``run.devices``'s form (the host's devices are checked where training starts): a count >= 1, or a
    non-empty list of CUDA ids / 'cuda:N' (no repeats: one learner per GPU) or of 'cpu', not both."""
    if value is None:
        return value
    if isinstance(value, int):
        if value < 1:
            raise ValueError(f"run.devices={value!r}: a count of learners must be >= 1")
        return value
    if not value:
        raise ValueError("run.devices=[] lists no device: use null (one learner on run.device) or e.g. [0, 1]")
    kinds = set()
    for entry in value:
        if isinstance(entry, int) and entry >= 0 or isinstance(entry, str) and _CUDA_DEVICE.fullmatch(entry):
            kinds.add("cuda")
        elif entry == "cpu":
            kinds.add("cpu")
        else:
            raise ValueError(f"run.devices={value!r}: {entry!r} is not a learner device; use CUDA ids (0), "
                             "'cuda:N' or 'cpu'")
    if len(kinds) > 1:
        raise ValueError(f"run.devices={value!r} mixes CPU and CUDA learners; use one kind")
    cuda = [e if isinstance(e, int) else int(e.split(":")[1]) for e in value if e != "cpu"]
    if len(set(cuda)) < len(cuda):
        raise ValueError(f"run.devices={value!r} lists a GPU twice; one learner per GPU")
    return value


class RunBase(StrictModel):
    """Section ``run``: bookkeeping every algorithm shares (BC adds run_name and eval_num_procs; online RL its
    step budget, checkpoint and evaluation cadence, in env steps)."""

    seed: int = Field(0, description="seeds python, numpy and torch (and the envs: env i gets seed + i)")
    device: str = Field("cpu", description="learner device: 'cpu', 'cuda', 'cuda:N' or 'auto' (cuda when "
                                           "available); simulators always run on the CPU")
    torch_threads: int | None = Field(
        1, ge=1, description="torch intra-op threads in the learner (None keeps torch's default); 1 is fastest for "
        "small networks on a busy shared CPU, where OpenMP spin-waiting across threads can cost 10x")
    run_dir: str | None = Field(
        None, description="where config, metrics.jsonl and checkpoints go. ms2 train / pipelines.train: None = a new "
        "$MS2FLOW_DATA_DIR/runs/<algo>/<task>/<run name>/<run id> per run, and an explicit run_dir that holds a run is "
        "refused unless overwrite; train_<algo>() of an online algorithm called directly: None = no files")
    overwrite: bool = Field(False, description="replace the run in an explicit run_dir (kept until the new one finished)")
    force: bool = Field(
        False, description="train on inputs that failed validation, were never validated, changed since or are "
        "incomplete (logged as a warning, recorded in train_result.json as forced_inputs)")
    eval_episodes: int = Field(0, ge=0, description="evaluate the final policy deterministically for this many "
                                                    "episodes (0 = none)")
    devices: int | list[int | str] | None = Field(
        None, description="data-parallel learners (PyTorch DDP, ms2core.algos.distributed): a list of devices, "
        "CUDA ids or 'cuda:N' ([0, 1] = cuda:0 and cuda:1, NCCL) or 'cpu' ([cpu, cpu] = two CPU processes, gloo), "
        "or a count N (N learners of run.device's kind). The batch sizes stay global (split over the learners). "
        "None = one learner on run.device")
    ddp_timeout_s: float = Field(1800.0, gt=0, description="with run.devices: the longest wait for the other "
                                 "learners (start, each collective; PPO's ranks > 0 wait out rank 0's rollouts)")

    @field_validator("devices")
    @classmethod
    def _devices_form(cls, value):
        return check_devices(value)


class BCRunConfig(RunBase):
    device: str = Field("auto", description="'cpu', 'cuda', 'cuda:N' or 'auto' (cuda when available)")
    torch_threads: int | None = Field(
        None, ge=1, description="torch intra-op threads (None keeps torch's default); 1 is fastest for small "
        "networks on a busy shared CPU, where OpenMP spin-waiting across threads can cost 10x")
    run_name: str = Field("default", description="the human part of the run directory and MLflow run name")
    eval_num_procs: int = Field(1, gt=0, description="worker processes of the final evaluation (ms2 evaluate)")


#: BC keys before the shared ``run`` / ``net`` sections -> their names now (old YAML is refused naming the new
#: key; old checkpoints are read through upgrade_renamed_keys).
BC_RENAMED_KEYS: dict[str, str] = {
    "network": "net", "network.kind": "net.backbone", "network.mlp_hidden": "net.hidden_sizes",
    "network.log_std_init": "net.init_log_std", "train.device": "run.device", "train.seed": "run.seed",
    "train.cpu_threads": "run.torch_threads", "run_dir": "run.run_dir", "run_name": "run.run_name",
    "overwrite": "run.overwrite", "force": "run.force", "eval_episodes": "run.eval_episodes",
    "eval_num_procs": "run.eval_num_procs",
}


def _has_key(data: dict, dotted: str) -> bool:
    node = data
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            return False
        node = node[part]
    return True


def renamed_keys_in(data: dict, renamed: dict[str, str]) -> list[tuple[str, str]]:
    """(old key, new key) for every renamed key ``data`` still uses (dotted paths)."""
    return [(old, new) for old, new in renamed.items() if isinstance(data, dict) and _has_key(data, old)]


def renamed_keys_message(found: list[tuple[str, str]]) -> str:
    return "renamed config keys: " + ", ".join(f"{old} is now {new}" for old, new in found)


def upgrade_renamed_keys(data: dict, renamed: dict[str, str]) -> dict:
    """A copy of ``data`` with every renamed key moved to its new name (deepest keys first, so a renamed field
    of a renamed section lands in the new section, merged with the section's other fields)."""
    import copy

    out = copy.deepcopy(data)
    for old, new in sorted(renamed.items(), key=lambda kv: -kv[0].count(".")):
        if not _has_key(out, old):
            continue
        *old_parents, old_leaf = old.split(".")
        node = out
        for part in old_parents:
            node = node[part]
        value = node.pop(old_leaf)
        *new_parents, new_leaf = new.split(".")
        target = out
        for part in new_parents:
            target = target.setdefault(part, {})
        if isinstance(value, dict) and isinstance(target.get(new_leaf), dict):
            target[new_leaf] = {**value, **target[new_leaf]}
        else:
            target[new_leaf] = value
    return out


class DatasetConfig(StrictModel):
    """Which Zarr demo datasets to sample from and how to hold them."""

    paths: list[str] = Field(default_factory=list, description="Zarr stores (data/obs/<key>, data/actions, meta/episode_ends)")
    num_samples: int | None = Field(None, gt=0, description="use only the first n transitions of each dataset")
    mode: DatasetMode = Field(
        "auto",
        description="ram: all in memory; dynamic: bounded chunk cache for datasets larger than RAM; "
        "gpu: whole dataset in GPU memory; auto: gpu on CUDA when it fits, else ram when it fits, else dynamic",
    )
    cache_bytes: int = Field(2 << 30, gt=0, description="dynamic mode: bytes of decoded blocks kept in memory")
    block_rows: int = Field(2048, gt=0, description="dynamic mode: transitions per cached block")
    refresh_every_batches: int = Field(8, gt=0, description="dynamic mode: swap one cached block every n batches")
    ram_limit_bytes: int = Field(8 << 30, gt=0, description="auto mode: larger datasets use dynamic loading")
    gpu_fraction: float = Field(0.6, gt=0, le=0.95, description="auto/gpu mode: fraction of free GPU memory it may fill")
    prefetch_batches: int = Field(
        4, ge=0, description="batches prepared ahead by a background thread when training on CUDA (0 = none); "
        "on CPU the thread would only compete with the update for the same cores, so it is not started",
    )


class TrainLoopConfig(StrictModel):
    num_steps: int = Field(50_000, gt=0, description="gradient updates")
    batch_size: int = Field(256, gt=0)
    lr: float = Field(3e-4, gt=0)
    weight_decay: float = Field(0.0, ge=0)
    grad_clip_norm: float | None = Field(None, gt=0)
    state_noise_std: float = Field(
        0.0, ge=0, description="Gaussian noise added to the 'state' input while training, in units of the dataset's "
        "per-dimension std: makes the policy robust to the small errors that compound in closed loop (0 = off)",
    )
    standardize_action_loss: bool = Field(
        False, description="weight each action dimension's squared error by 1/variance of that dimension in the "
        "dataset (= regression on standardized actions): otherwise the +-1 gripper dimension dominates the loss and "
        "the small arm deltas are fit coarsely (deterministic head only)",
    )
    precision: Literal["fp32", "bf16"] = Field("fp32", description="bf16 autocast on CUDA")
    log_every_steps: int = Field(100, gt=0)
    checkpoint_every_steps: int = Field(5_000, gt=0)


class EvalConfig(StrictModel):
    """``ms2 evaluate``: run a checkpoint's policy for ``num_episodes`` episodes."""

    checkpoint: str = Field("", description="path of a checkpoint written by ms2 train (or by ManiSkill2-Learn, "
                                            "with ml2l_config)")
    ml2l_config: str | None = Field(None, description="the ManiSkill2-Learn .py config of an ML2L checkpoint")
    ml2l_options: list[str] = Field(default_factory=list, description="ML2L --cfg-options KEY=VALUE on ml2l_config")
    num_episodes: int = Field(100, gt=0)
    num_procs: int = Field(1, gt=0, description="worker processes, each keeping one env (1 = in this process)")
    sim_python: str | None = Field(
        None, description="interpreter for the simulator worker processes (e.g. a simulator runtime's python); "
        "None = $MS2FLOW_SIM_PYTHON, else this one; it needs torch only where the policy runs in the workers")
    policy_in: Literal["auto", "worker", "parent"] = Field(
        "auto", description="where the policy runs: 'worker' (each worker loads it on CPU and runs whole episodes), "
        "'parent' (this process batches every worker's observation and runs it once per step on policy_device; "
        "the workers need no torch), 'auto' (parent where the workers run another interpreter, else worker)")
    policy_device: Literal["cpu", "cuda", "auto"] = Field(
        "cpu", description="device of the policy when it runs in this process (policy_in parent); auto: cuda if any")
    seed: int = Field(0, description="episode i is reset with seed + i")
    sample_mode: SampleMode = "mean"
    save_traj: bool = False
    save_video: bool = False
    max_videos: int | None = Field(None, ge=0, description="with save_video: record only the first N episodes "
                                   "(None: all); a 512x512 frame costs ~0.2 s to render on a CPU")
    output_dir: str | None = Field(None, description="default: <checkpoint dir>/../eval")
    backend: Literal["sapien", "fake"] | None = Field(None, description="override the checkpoint's env backend")
    max_episode_steps: int | None = Field(None, gt=0, description="override the step limit")
    continue_after_success: bool = Field(
        False, description="ignore 'terminated' (ManiSkill2 terminates on success) and run to the step limit, "
        "so 'success at end' and 'success once' can differ",
    )


class BCConfig(StrictModel):
    """Behaviour cloning: ``ms2 train bc --config configs/bc/<task>_<obs>.yaml``."""

    RENAMED_KEYS: ClassVar[dict[str, str]] = BC_RENAMED_KEYS

    env: EnvConfig = Field(default_factory=EnvConfig)
    dataset: DatasetConfig = Field(default_factory=DatasetConfig)
    net: NetConfig = Field(default_factory=NetConfig)
    train: TrainLoopConfig = Field(default_factory=TrainLoopConfig)
    run: BCRunConfig = Field(default_factory=BCRunConfig)

    @model_validator(mode="before")
    @classmethod
    def _no_renamed_keys(cls, data):
        if found := renamed_keys_in(data, BC_RENAMED_KEYS):
            raise ValueError(renamed_keys_message(found))
        return data


class Stat(StrictModel):
    """A mean with its 95% interval (normal approximation; Wilson for rates)."""

    mean: float
    ci95_low: float
    ci95_high: float
    std: float = 0.0


class EpisodeResult(StrictModel):
    seed: int
    length: int
    episode_return: float
    success_at_end: bool
    success_once: bool
    video: str | None = None


class EvaluationResult(StrictModel):
    """What ``ms2 evaluate`` measured; saved as JSON beside the checkpoint's run."""

    env_id: str
    obs_mode: str
    control_mode: str
    checkpoint: str
    checkpoint_step: int
    num_episodes: int
    seed: int
    sample_mode: SampleMode
    max_episode_steps: int | None
    success_at_end: Stat
    success_once: Stat
    episode_length: Stat
    episode_return: Stat
    episodes: list[EpisodeResult]
    trajectory_path: str | None = None
    wall_time_s: float


class TrainResult(StrictModel):
    """What training returns for every algorithm (``pipelines.train.run``, ``ms2core.algos.<algo>``), saved as
    the run's train_result.json. Counts are totals of the run so far, ``start_*`` where this invocation began."""

    algo: str
    run_dir: str | None = Field(None, description="None: an online algorithm called directly without run.run_dir")
    final_checkpoint: str | None = None
    updates: int = Field(..., description="gradient updates (BC: train steps; PPO/DAPG: rollout updates; SAC/GAIL: "
                                          "critic steps)")
    env_steps: int | None = Field(None, description="env transitions collected (None for BC)")
    start_update: int = Field(0, description="updates already done when this invocation started (resume)")
    start_env_step: int | None = Field(None, description="env steps already done when this invocation started")
    episodes: int | None = Field(None, description="training episodes finished (online RL)")
    updates_per_s: float = Field(0.0, description="updates of this invocation / its wall time")
    env_steps_per_s: float | None = Field(None, description="env steps of this invocation / its wall time")
    final_loss: float | None = None
    losses: list[float] = Field(default_factory=list, description="BC: per-step training loss of this invocation")
    final_mean_return: float | None = Field(None, description="online RL: mean return of the last logged episodes")
    final_success_rate: float | None = None
    eval_mean_return: float | None = Field(None, description="online RL: its final deterministic evaluation")
    eval_success_rate: float | None = None
    curve: list[dict[str, float]] = Field(
        default_factory=list, description="online RL: [{env_steps, mean_return, success_rate}] at each log")
    eval_curve: list[dict[str, float]] = Field(
        default_factory=list, description="run.eval_every_steps: [{env_steps, success_rate, mean_return}]")
    skipped: bool = Field(False, description="the run was already complete with this config: nothing was done")
    evaluation: EvaluationResult | None = None
    inputs: dict[str, str | None] = Field(
        default_factory=dict, description="input dataset path -> the validation fingerprint it was trained on")
    forced_inputs: list[str] = Field(default_factory=list, description="validation problems a --force overrode")

    @model_validator(mode="before")
    @classmethod
    def _upgrade_v1(cls, data):
        """train_result.json of older ms2flow: num_steps/start_step counted updates (BC) or env steps (RL)."""
        if not isinstance(data, dict) or "num_steps" not in data:
            return data
        data = dict(data)
        num_steps, start_step = data.pop("num_steps"), data.pop("start_step", 0)
        if data.get("algo") == "bc":
            data.update(updates=num_steps, start_update=start_step)
        else:
            data.setdefault("env_steps", num_steps)
            data.setdefault("updates", 0)
        return data
