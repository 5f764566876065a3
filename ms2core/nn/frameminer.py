"""FrameMiner-MixAction (Liu et al., "Frame Mining", CoRL 2022): a PointNet per coordinate frame, mixed per action.

The same point cloud is expressed in K candidate frames; branch k is its own
ManiSkill2-Learn PointNet (per-point MLP -> max-pool -> concat state -> MLP) on
the cloud in frame k and proposes a whole action mean ``a_k`` (B, A). A gate,
an MLP on the concatenated branch features, outputs K logits per action
dimension; their softmax over the frames weights the proposals:

    w = softmax_k(gate([f_1, ..., f_K]).reshape(B, K, A)),   mean = sum_k w[:, k] * a_k

so every action dimension picks its own mix of frames (ManiSkill2-Learn's
``FrameMiners``). The proposal heads and the gate's last layer start at zero
(zero-initialised outputs stabilise early point-cloud RL; uniform weights at
the start). A value critic reads the concatenated branch features.

Frames come from the processed observation itself (ms2core.obs): ``xyz`` and
the poses in ``state`` are expressed in the same frame (the dataset/rollout's
``obs_frame``), so a frame with pose (t, R) in that frame sees ``R^T (p - t)``:

* ``obs``  — the frame the observation was processed in (world, or the robot
  base with ``obs_frame: base``, ManiSkill2-Learn's default), identity;
* ``tcp``  — the end effector: ``extra/tcp_pose`` (position + wxyz quaternion) from the state;
* ``goal`` — the goal position ``extra/goal_pos`` with the obs frame's axes.

Where each pose sits in ``state`` is resolved once from the env's raw
observation space (``ms2core.obs.state_layout``) into :class:`Frame` indices,
which checkpoints store so a policy is rebuilt without an env.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass

import torch
from torch import nn

from ms2core.errors import ConfigError
from ms2core.nn.encoders import PointNetEncoder, make_mlp

ObsBatch = dict[str, torch.Tensor]

#: candidate frame name -> (state entry holding its pose, entry size): 7 = position + quaternion, 3 = position only
FRAME_SOURCES = {"obs": None, "tcp": ("extra/tcp_pose", 7), "goal": ("extra/goal_pos", 3)}


@dataclass(frozen=True)
class Frame:
    """A candidate frame, resolved to where its pose sits in ``obs['state']``."""

    name: str
    pos_index: int | None = None    # first of 3 state entries holding the frame origin; None = identity frame
    quat_index: int | None = None   # first of 4 entries holding its wxyz orientation; None = obs-frame axes

    def to_dict(self) -> dict:
        return asdict(self)


def resolve_frames(names: Sequence[str], layout: Mapping[str, slice]) -> list[Frame]:
    """Frames named in the config -> :class:`Frame` indices, from the state layout of the env's observations."""
    frames = []
    for name in names:
        if name not in FRAME_SOURCES:
            raise ConfigError(f"unknown FrameMiner frame {name!r}", hint=f"choose from {sorted(FRAME_SOURCES)}")
        source = FRAME_SOURCES[name]
        if source is None:
            frames.append(Frame(name))
            continue
        key, size = source
        where = layout.get(key)
        if where is None or where.stop - where.start != size:
            raise ConfigError(
                f"FrameMiner frame {name!r} needs {key} ({size} numbers) in the observation state, "
                f"but the state holds {sorted(layout)}",
                hint=f"drop {name!r} from net.frames for this task, or use frames from {sorted(FRAME_SOURCES)}",
            )
        frames.append(Frame(name, where.start, where.start + 3 if size == 7 else None))
    if not frames:
        raise ConfigError("FrameMiner needs at least one frame", hint="e.g. net.frames=[obs,tcp]")
    return frames


def quaternion_to_matrix(quat_wxyz: torch.Tensor) -> torch.Tensor:
    """(..., 4) quaternions (w, x, y, z: SAPIEN's order; normalised here) -> (..., 3, 3) rotation matrices."""
    q = quat_wxyz / quat_wxyz.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    w, x, y, z = q.unbind(-1)
    return torch.stack([
        1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y),
        2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x),
        2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y),
    ], dim=-1).reshape(*q.shape[:-1], 3, 3)


def points_to_frame(xyz: torch.Tensor, frame_pos: torch.Tensor, frame_rot: torch.Tensor | None) -> torch.Tensor:
    """Points (B, N, 3) in a frame with origin ``frame_pos`` (B, 3) and axes ``frame_rot`` (B, 3, 3): R^T (p - t)."""
    local = xyz - frame_pos[:, None, :]
    return local if frame_rot is None else torch.einsum("bji,bnj->bni", frame_rot, local)


def cloud_in_frame(xyz: torch.Tensor, state: torch.Tensor, frame: Frame) -> torch.Tensor:
    """``xyz`` (B, N, 3) re-expressed in ``frame``, whose pose is read from ``state`` (B, S)."""
    if frame.pos_index is None:
        return xyz
    state = state.to(xyz.dtype)
    pos = state[:, frame.pos_index:frame.pos_index + 3]
    rot = None if frame.quat_index is None else quaternion_to_matrix(state[:, frame.quat_index:frame.quat_index + 4])
    return points_to_frame(xyz, pos, rot)


class FrameMinerBackbone(nn.Module):
    """Per-frame PointNet branches; ``forward`` -> concatenated branch features (B, K * frame_dim)."""

    def __init__(self, frames: Sequence[Frame], state_dim: int, point_mlp: list[int], hidden: list[int],
                 activation: str = "relu"):
        super().__init__()
        if not frames:
            raise ConfigError("FrameMiner needs at least one frame", hint="e.g. net.frames=[obs,tcp]")
        self.frames = list(frames)
        self.branches = nn.ModuleList(
            PointNetEncoder(state_dim, point_mlp, hidden, activation, normalize_state=False) for _ in self.frames)
        self.num_frames = len(self.frames)
        self.frame_dim = self.branches[0].out_dim
        self.out_dim = self.num_frames * self.frame_dim

    def frame_inputs(self, obs: ObsBatch) -> list[ObsBatch]:
        """The observation once per frame, with ``xyz`` in that frame (other keys unchanged)."""
        xyz = obs["xyz"].float()
        return [{**obs, "xyz": cloud_in_frame(xyz, obs["state"], frame)} for frame in self.frames]

    def forward(self, obs: ObsBatch) -> torch.Tensor:
        return torch.cat([branch(o) for branch, o in zip(self.branches, self.frame_inputs(obs))], dim=-1)


@dataclass
class MixedAction:
    mean: torch.Tensor        # (B, A) the mixture
    weights: torch.Tensor     # (B, K, A) softmax over frames, per action dimension
    proposals: torch.Tensor   # (B, K, A) each frame's action mean


class MixActionActor(nn.Module):
    """Gaussian policy whose mean is the gated mix of per-frame proposals; state-independent log std.

    Same interface as ``ms2core.nn.actors.GaussianActor`` (``forward(obs) -> (mean, log_std)``),
    so PPO and DAPG use it unchanged.
    """

    def __init__(self, backbone: FrameMinerBackbone, action_dim: int, gate_hidden: list[int] | None = None,
                 init_log_std: float = -0.5, activation: str = "relu", detach_feature: bool = False):
        super().__init__()
        self.backbone = backbone
        self.detach_feature = detach_feature
        self.action_dim = action_dim
        self.heads = nn.ModuleList(nn.Linear(backbone.frame_dim, action_dim) for _ in range(backbone.num_frames))
        self.gate = make_mlp(backbone.out_dim, list(gate_hidden if gate_hidden is not None else [192]),
                             backbone.num_frames * action_dim, activation)
        for layer in [*self.heads, self.gate[-1]]:
            nn.init.zeros_(layer.weight)
            nn.init.zeros_(layer.bias)
        self.log_std = nn.Parameter(torch.full((action_dim,), float(init_log_std)))

    def mix(self, features: torch.Tensor) -> MixedAction:
        """Concatenated branch features (B, K * F) -> proposals, weights and their mix."""
        per_frame = features.unflatten(-1, (self.backbone.num_frames, self.backbone.frame_dim))  # (B, K, F)
        proposals = torch.stack([head(per_frame[:, k]) for k, head in enumerate(self.heads)], dim=1)
        logits = self.gate(features).unflatten(-1, (self.backbone.num_frames, self.action_dim))
        weights = torch.softmax(logits, dim=1)
        return MixedAction((weights * proposals).sum(1), weights, proposals)

    def forward(self, obs: ObsBatch) -> tuple[torch.Tensor, torch.Tensor]:
        features = self.backbone(obs)
        if self.detach_feature:
            features = features.detach()
        mean = self.mix(features).mean
        return mean, self.log_std.expand_as(mean)
