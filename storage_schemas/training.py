"""Training and evaluation contracts: network, dataset, BC and evaluation configs, EvaluationResult.

Every config is a StrictModel (unknown keys are errors). YAML files under
``configs/`` are validated against these models by ``ms2core.config.load_config``
and the fully resolved config is saved with every run and inside every checkpoint.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from storage_schemas.env import EnvConfig, StrictModel

NetworkKind = Literal["auto", "mlp", "pointnet", "cnn"]
HeadKind = Literal["deterministic", "gaussian", "tanh_gaussian"]
DatasetMode = Literal["auto", "ram", "dynamic", "gpu"]
SampleMode = Literal["mean", "sample"]


class NetworkConfig(StrictModel):
    """The policy network. ``kind='auto'`` picks MLP / PointNet / CNN from the obs mode."""

    kind: NetworkKind = "auto"
    head: HeadKind = Field("deterministic", description="BC uses 'deterministic'; RL uses the Gaussian heads")
    mlp_hidden: list[int] = Field(default_factory=lambda: [256, 256], description="MLP after the encoder (or on state)")
    pointnet_point_mlp: list[int] = Field(
        default_factory=lambda: [64, 128, 512], description="per-point MLP before the max-pool (ManiSkill2-Learn)"
    )
    cnn_kind: Literal["nature", "impala"] = "nature"
    activation: Literal["relu", "elu", "gelu"] = "relu"
    normalize_state: bool = Field(True, description="standardise 'state' with dataset mean/std stored in the model")
    depth_max_m: float = Field(4.0, gt=0, description="depth is clipped to [0, depth_max_m] and divided by it")
    log_std_init: float = -0.5

    @model_validator(mode="after")
    def _positive_sizes(self):
        for name in ("mlp_hidden", "pointnet_point_mlp"):
            sizes = getattr(self, name)
            if any(s <= 0 for s in sizes):
                raise ValueError(f"{name} must hold positive layer widths, got {sizes}")
        return self


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
    device: str = Field("auto", description="'cpu', 'cuda', 'cuda:N' or 'auto' (cuda when available)")
    precision: Literal["fp32", "bf16"] = Field("fp32", description="bf16 autocast on CUDA")
    cpu_threads: int | None = Field(
        None, gt=0, description="torch intra-op threads (None keeps torch's default); 1 is fastest for small "
        "networks on a busy shared CPU, where OpenMP spin-waiting across threads can cost 10x",
    )
    seed: int = 0
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
        "None = $MS2FLOW_SIM_PYTHON, else this one; it needs torch too")
    seed: int = Field(0, description="episode i is reset with seed + i")
    sample_mode: SampleMode = "mean"
    save_traj: bool = False
    save_video: bool = False
    output_dir: str | None = Field(None, description="default: <checkpoint dir>/../eval")
    backend: Literal["sapien", "fake"] | None = Field(None, description="override the checkpoint's env backend")
    max_episode_steps: int | None = Field(None, gt=0, description="override the step limit")
    continue_after_success: bool = Field(
        False, description="ignore 'terminated' (ManiSkill2 terminates on success) and run to the step limit, "
        "so 'success at end' and 'success once' can differ",
    )


class BCConfig(StrictModel):
    """Behaviour cloning: ``ms2 train bc --config configs/bc/<task>_<obs>.yaml``."""

    env: EnvConfig = Field(default_factory=EnvConfig)
    dataset: DatasetConfig = Field(default_factory=DatasetConfig)
    network: NetworkConfig = Field(default_factory=NetworkConfig)
    train: TrainLoopConfig = Field(default_factory=TrainLoopConfig)
    eval_episodes: int = Field(0, ge=0, description="evaluate the final checkpoint for this many episodes (0 = skip)")
    eval_num_procs: int = Field(1, gt=0)
    run_dir: str | None = Field(
        None, description="default: a new $MS2FLOW_DATA_DIR/runs/bc/<env_id>/<run_name>/<run id> per run; an explicit "
        "run_dir that already holds a run is refused unless overwrite")
    run_name: str = "default"
    overwrite: bool = Field(False, description="replace the run in an explicit run_dir (kept until the new one finished)")
    force: bool = Field(
        False, description="train on inputs that failed validation, were never validated, changed since or are "
        "incomplete (logged as a warning, recorded in train_result.json as forced_inputs)")


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
    algo: str
    run_dir: str
    final_checkpoint: str
    num_steps: int
    start_step: int
    final_loss: float | None
    losses: list[float] = Field(default_factory=list, description="per-step training loss of this invocation")
    updates_per_s: float
    skipped: bool = Field(False, description="the run was already complete with this config: nothing was done")
    evaluation: EvaluationResult | None = None
    env_steps: int | None = Field(None, description="online RL: environment transitions collected")
    env_steps_per_s: float | None = Field(None, description="online RL: env_steps / wall time of the whole run")
    eval_success_rate: float | None = Field(None, description="online RL: success of its final deterministic evaluation")
    eval_mean_return: float | None = None
    inputs: dict[str, str | None] = Field(
        default_factory=dict, description="input dataset path -> the validation fingerprint it was trained on")
    forced_inputs: list[str] = Field(default_factory=list, description="validation problems a --force overrode")
