"""Rendered datasets: observation-processing options, the render stage config, and the manifest
stored in every Zarr dataset's root attributes (``attrs["ms2flow"]``).

The manifest is the dataset's identity card: what it was rendered from (demo
digest), with what (mani_skill2/sapien versions, every render option), how it is
stored (codecs, chunk and shard rows per array) and how far rendering got (per
range and per episode). ``dataset_version`` is a hash of exactly the fields that
change the stored bytes, so a changed option or a new demo gives a new version
(a new store path) and the old dataset stays readable.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any, Literal

from pydantic import Field, model_serializer, model_validator

from storage_schemas.env import RewardMode, StrictModel

MANIFEST_ATTR = "ms2flow"
#: The episode-boundary array of every dataset (cumulative transition counts, int64). Readers cut it to
#: the manifest's ``n_committed_episodes``; ms2core.zarr_io.read_episode_ends is the reader.
EPISODE_ENDS = "meta/episode_ends"
MANIFEST_FORMAT = "ms2flow.dataset"
MANIFEST_FORMAT_VERSION = 1
#: What a stored step means; part of every dataset's identity (so of its version and default store name).
#: 1: rewards evaluated after set_state(s_{t+1}) with no physics step (contact-based rewards such as PickCube's
#:    grasp bonus never seen), ``dones`` = success | last step.
#: 2: rewards, success and terminated from stepping a_t from s_t (what env.step returns there), and
#:    ``success``/``terminated``/``truncated`` with ManiSkill2's meaning instead of ``dones``.
RENDER_VERSION = 2
MiB = 1 << 20

#: The observation modes a dataset can be rendered in (ManiSkill2-Learn's convert_state modes).
DatasetObsMode = Literal["state", "pointcloud", "rgbd"]

#: Processed-observation layouts: ms2flow's own, or ManiSkill2-Learn's exactly (ms2core/obs_ml2l.py).
ObsLayout = Literal["ms2flow", "ml2l"]

#: Options the ml2l layout fixes to ManiSkill2-Learn's behaviour: (value, what ML2L does).
ML2L_FIXED_OPTIONS: dict[str, tuple[Any, str]] = {
    "remove_ground": (True, "ML2L always drops ground points"),
    "ground_z_m": (1e-4, "ML2L keeps points with world z > 1e-4"),
    "downsample": ("random", "ML2L downsamples by a random subset"),
    "goal_point_radius_m": (0.01, "ML2L draws goal points in a 1 cm half-width cube"),
    "include_rgb": (True, "ML2L point clouds and images always carry rgb"),
    "include_depth": (True, "ML2L rgbd observations always carry depth"),
    "include_seg": (False, "ML2L's segmentation keys (one-hot visual/actor seg, 'segs') are not reproduced"),
}


class ObsProcessConfig(StrictModel):
    """How raw ManiSkill2 observations become the flat processed dict (ManiSkill2-Learn semantics).

    pointcloud: drop invalid (background) points, optionally the ground, move to ``obs_frame``,
    downsample to ``n_points`` (random or farthest-point), append ``n_goal_points`` around the goal.
    rgbd: cameras stacked along channels in the order hand_camera, base_camera, then others sorted.
    """

    obs_mode: DatasetObsMode = "pointcloud"
    n_points: int = Field(1200, gt=0, description="points kept per frame (pointcloud)")
    downsample: Literal["random", "fps"] = Field(
        "random", description="random subset, or farthest-point sampling (fpsample's bucket FPS)"
    )
    obs_frame: Literal["world", "base", "ee"] = Field(
        "world", description="frame of points and of extra poses/positions: world, robot base, or TCP (ee)"
    )
    n_goal_points: int = Field(0, ge=0, description="points sampled around extra/goal_pos and appended (green)")
    goal_point_radius_m: float = Field(0.01, gt=0, description="half-width of the cube goal points are drawn from")
    remove_ground: bool = Field(True, description="drop points with world z below ground_z_m (pointcloud)")
    ground_z_m: float = Field(1e-3, description="height under which a point counts as ground")
    include_rgb: bool = True
    include_depth: bool = Field(True, description="rgbd only: store the depth images")
    include_seg: bool = Field(
        False, description="store the robot segmentation mask (renders in <mode>_robot_seg)"
    )
    obs_layout: ObsLayout = Field(
        "ms2flow",
        description="ms2flow: this project's layout; ml2l: ManiSkill2-Learn's observation keys, state vector, "
                    "dtypes and frames exactly (README: observation layouts)",
    )

    @model_validator(mode="before")
    @classmethod
    def _ml2l_fixed_options(cls, data: Any) -> Any:
        """The ml2l layout fills in ML2L's values for the options it fixes and refuses others."""
        if not isinstance(data, dict) or data.get("obs_layout") != "ml2l":
            return data
        data = dict(data)
        for name, (value, why) in ML2L_FIXED_OPTIONS.items():
            given = data.setdefault(name, value)
            if given != value:
                raise ValueError(f"obs_layout ml2l fixes {name} to {value!r} ({why}); got {given!r}. "
                                 f"Remove {name} from the config or use obs_layout ms2flow")
        return data

    @model_validator(mode="after")
    def _check(self) -> ObsProcessConfig:
        if self.obs_mode == "state" and self.include_seg:
            raise ValueError("include_seg needs obs_mode pointcloud or rgbd (state has no pictures)")
        if self.obs_layout == "ml2l" and self.obs_mode == "rgbd" and self.obs_frame != "world":
            raise ValueError(f"obs_layout ml2l with obs_mode rgbd keeps the state in the world frame, as ML2L "
                             f"does (its rgbd ignores obs_frame); got obs_frame {self.obs_frame!r}. Use world")
        return self

    @model_serializer(mode="wrap")
    def _omit_default_layout(self, handler):
        # The default layout is not written, so datasets rendered before the field existed keep their version.
        data = handler(self)
        if isinstance(data, dict) and self.obs_layout == "ms2flow":
            data.pop("obs_layout", None)
        return data

    @property
    def env_obs_mode(self) -> str:
        """The ManiSkill2 obs mode the env is built in to produce these observations."""
        return f"{self.obs_mode}_robot_seg" if self.include_seg else self.obs_mode


class RenderOptions(StrictModel):
    """Every option that changes the bytes of a rendered dataset (hashed into its version)."""

    obs: ObsProcessConfig = Field(default_factory=ObsProcessConfig)
    reward_mode: RewardMode = "dense"
    camera_size: tuple[int, int] | None = Field(
        None, description="(width, height) of every camera; None keeps the task's (128x128)"
    )
    backend: Literal["sapien", "fake"] = "sapien"
    max_episodes: int | None = Field(None, gt=0, description="render only the first N trajectories")
    chunk_target_bytes: int = Field(
        MiB // 2, ge=MiB // 16, le=8 * MiB,
        description="uncompressed bytes per chunk (64 KiB-8 MiB; arrays with more chunks are sharded). A random "
                    "row decodes its whole chunk, so small chunks make random minibatch reads cheap; 512 KiB "
                    "holds 5 rgb / 8 float16 depth frames of two 128x128 cameras, small enough for random "
                    "reads and large enough for the compressor",
    )
    image_chunk_target_bytes: int | None = Field(
        384 * 1024, ge=MiB // 16, le=8 * MiB,
        description="uncompressed bytes per chunk of image arrays (rows of three axes: rgb, depth, seg); None "
                    "uses chunk_target_bytes. 384 KiB holds 4 rgb / 6 float16 depth frames of two 128x128 "
                    "cameras: a random row decodes 22% fewer bytes than at 512 KiB, for 8% more stored bytes. "
                    "Point clouds keep chunk_target_bytes (their frames share little, so their chunks can be long "
                    "and cheap). Stores written before this option used chunk_target_bytes for images",
    )
    shard_min_chunks: int = Field(
        64, ge=2, description="shard an array once it would have more chunks than this (objects per array stay few)"
    )
    compression_level: int = Field(
        5, ge=1, le=9, description="Blosc zstd level. 5 encodes rgbd at ~20 MB/s on one core; 9 (zstd's "
                                   "ultra level 22) stores rgbd in ~0.7x of level 5's bytes but encodes ~30x slower")
    xyz_keep_bits: int | None = Field(
        16, ge=1, le=23,
        description="float32 mantissa bits kept in point-cloud xyz (None: lossless). 16 bits round a "
                    "coordinate by at most 2^-17 of its magnitude (<= 3.8 um within 1 m, ~1000x below a 128x128 "
                    "camera's point spacing) and shrink xyz from 0.76x to 0.56x of its raw size: float "
                    "coordinates' low mantissa bits are noise no lossless codec can compress",
    )
    depth_dtype: Literal["float16", "float32"] = Field(
        "float16",
        description="dtype of stored rgbd depth (metres either way). float16 is what ManiSkill2-Learn stores: "
                    "depth rounded to 11 significant bits (relative error <= 2^-11, <= 0.5 mm within 1 m, "
                    "<= 2 mm at 4 m; exact for ML2L-converted data) at 0.4x the bytes of float32; float32 "
                    "keeps the renderer's values. Stores written before this option hold float32",
    )
    seed: int = Field(0, description="seed of random downsampling / goal points (per episode and step)")


class RenderConfig(StrictModel):
    """``ms2 render`` / ``pipelines.render.run``: control-mode demos -> Zarr dataset."""

    source: str = Field(..., description="demo pair (NAME.h5 beside NAME.json)")
    output_dir: str | None = Field(
        None, description="directory or s3://bucket/prefix; the store is <output_dir>/<demo>.<obs>.<version>.zarr"
    )
    store: str | None = Field(None, description="explicit store path/URL (overrides output_dir naming)")
    storage_options: dict[str, Any] = Field(
        default_factory=dict, description="fsspec options for remote stores (endpoint_url, key, secret); never stored"
    )
    options: RenderOptions = Field(default_factory=RenderOptions)
    episodes_per_range: int | None = Field(
        None, gt=0, description="episodes per unit of work (one commit each); None sizes the ranges so every "
                                "worker gets >= 8 of them (1 episode each for small renders, at most 8)")
    workers: int = Field(1, ge=0, description="Dask LocalCluster worker processes; 0 renders in this process")
    scheduler: str | None = Field(None, description="address of an existing Dask scheduler (tcp://host:port)")
    overwrite: bool = Field(False, description="replace a store at this path whose manifest differs")
    force: bool = Field(False, description="render a demo pair that fails the demo-pair checks anyway "
                                           "(recorded in the manifest's source)")
    progress: bool = True


class ArraySpec(StrictModel):
    """How one time-major array is stored."""

    row_shape: list[int]
    dtype: str
    chunk_rows: int
    shard_rows: int | None = None
    codec: str


class RangeStatus(StrictModel):
    """One unit of work: consecutive episodes rendered by one worker and committed together."""

    index: int
    first_episode: int
    n_episodes: int
    status: Literal["pending", "committed"] = "pending"


class EpisodeStatus(StrictModel):
    episode_id: int
    seed: int | None
    n_steps: int
    committed: bool = False
    success: bool | None = Field(None, description="success at the last step (known once committed)")


class SourceInfo(StrictModel):
    path: str
    digest: str
    env_id: str
    control_mode: str | None
    n_episodes: int = Field(description="episodes in the demo pair (before max_episodes)")
    replay: Literal["env_states", "actions"]
    demo_checks: Literal["passed", "forced"] = Field(
        "passed", description="the source failed the demo-pair checks and was rendered with force")
    demo_check_errors: list[str] = Field(default_factory=list, description="the failing check codes, when forced")


class StoredObject(StrictModel):
    """One stored object (a chunk or shard file / S3 key) as the writer left it."""

    nbytes: int = Field(ge=0)
    crc32: int = Field(ge=0, description="zlib.crc32 of the object's bytes")


#: array path under the store root (data/actions, meta/episode_ends) -> chunk key under it (c/0/0) -> digest
ChunkInventory = dict[str, dict[str, StoredObject]]


class DatasetManifest(StrictModel):
    format: Literal["ms2flow.dataset"] = MANIFEST_FORMAT
    format_version: int = MANIFEST_FORMAT_VERSION
    dataset_version: str
    source: SourceInfo
    versions: dict[str, str]
    renderer: dict[str, str] | None = Field(
        None, description="the Vulkan device the render ran on (name, device_type, driver, api_version, "
                          "selection), e.g. an NVIDIA GPU or lavapipe; None for the fake backend or a store "
                          "written before it was recorded. Provenance, not identity: the same demos and options "
                          "render the same dataset on any device (state/actions bit-identical; images and point "
                          "clouds within the validated tolerance), so dataset_version does not depend on it")
    options: RenderOptions
    arrays: dict[str, ArraySpec] = Field(default_factory=dict, description="key under data/ -> storage")
    ranges: list[RangeStatus] = Field(default_factory=list)
    episodes: list[EpisodeStatus] = Field(default_factory=list)
    n_committed_episodes: int = 0
    n_committed_rows: int = 0
    complete: bool = False
    render_version: int = Field(RENDER_VERSION, description="what a stored step means (see RENDER_VERSION)")

    @model_validator(mode="before")
    @classmethod
    def _stored_before_render_version(cls, data: Any) -> Any:
        # A stored manifest (it always has "format") without render_version was written by render version 1.
        if isinstance(data, dict) and "format" in data and "render_version" not in data:
            data = {**data, "render_version": 1}
        # Stores rendered before depth_dtype existed hold float32 depth: say so (their identity is unchanged
        # only for comparisons with the same options; a resume with today's float16 default is refused).
        options = data.get("options") if isinstance(data, dict) and "format" in data else None
        if isinstance(options, dict) and "depth_dtype" not in options:
            data = {**data, "options": {**options, "depth_dtype": "float32"}}
            options = data["options"]
        # ... and before image_chunk_target_bytes, images were chunked by chunk_target_bytes.
        if isinstance(options, dict) and "image_chunk_target_bytes" not in options:
            data = {**data, "options": {**options, "image_chunk_target_bytes": None}}
        return data
    inventory: ChunkInventory | None = Field(
        None, description="every stored chunk/shard of the committed arrays with its size and checksum, written "
                          "with each commit; None: a store written before inventories (refused unless forced)")

    def identity(self) -> dict:
        """The fields that define the dataset (hashed into dataset_version)."""
        return identity_payload(self.source.digest, self.options, self.versions, self.render_version)


def identity_payload(source_digest: str, options: RenderOptions, versions: dict[str, str],
                     render_version: int = RENDER_VERSION) -> dict:
    return {
        "format_version": MANIFEST_FORMAT_VERSION,
        "render_version": render_version,
        "source_digest": source_digest,
        "options": options.model_dump(mode="json"),
        "versions": {k: versions.get(k, "") for k in ("mani_skill2", "sapien")},
    }


def dataset_version(source_digest: str, options: RenderOptions, versions: dict[str, str]) -> str:
    """Short, stable hash of the demo digest, every render option and the renderer versions."""
    blob = json.dumps(identity_payload(source_digest, options, versions), sort_keys=True).encode()
    return hashlib.sha256(blob).hexdigest()[:12]


class RenderResult(StrictModel):
    store: str
    dataset_version: str
    n_episodes: int
    n_rows: int
    ranges_rendered: int
    ranges_reused: int = Field(description="complete staging ranges an interrupted run left, committed now")
    episodes_kept: int = Field(0, description="episodes an earlier, interrupted run had committed already")
    nothing_to_do: bool
    elapsed_s: float
    worker_render_s: float = Field(0.0, description="time workers spent rendering + staging (summed over ranges)")
    frames_per_s: float | None = None


class ExportConfig(StrictModel):
    """``ms2 export-h5``: a Zarr dataset -> ManiSkill2-Learn's HDF5 layout."""

    store: str
    output: str = Field(..., description="path of the .h5 to write")
    storage_options: dict[str, Any] = Field(default_factory=dict)
    compression: Literal["gzip", "none"] = "gzip"
    overwrite: bool = False


class ExportResult(StrictModel):
    output: str
    n_episodes: int
    n_rows: int
    bytes: int
