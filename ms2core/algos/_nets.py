"""Small MLP networks and the distribution maths the online algorithms need.

TO BE REPLACED by ``ms2core.nn`` (MLP / PointNet / CNN backbones and Gaussian heads)
when the learning core is merged: the algorithms only rely on the interfaces here —

* a *backbone* maps a processed-observation batch ``{key: (B, ...)}`` to features
  ``(B, F)`` and has an ``out_dim`` attribute (pass ms2core.nn's PointNet as
  ``backbone=`` to any factory below);
* an *actor* maps observations to distribution parameters ``(mean, log_std)``;
* a *critic* maps observations (and actions) to values ``(B,)``.

The tanh-Gaussian log-probability (with the change-of-variables term in its
numerically stable form) is pure and unit-tested; it stays wherever the heads go.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F

ObsBatch = dict[str, torch.Tensor]

_ACTIVATIONS = {"relu": nn.ReLU, "tanh": nn.Tanh, "elu": nn.ELU}
LOG_STD_MIN, LOG_STD_MAX = -20.0, 2.0


# --------------------------------------------------------------------------- distributions (pure)
def gaussian_log_prob(x: torch.Tensor, mean: torch.Tensor, log_std: torch.Tensor) -> torch.Tensor:
    """log N(x; mean, exp(log_std)^2) summed over the last (action) dimension."""
    z = (x - mean) * torch.exp(-log_std)
    return (-0.5 * z.pow(2) - log_std - 0.5 * math.log(2 * math.pi)).sum(-1)


def gaussian_entropy(log_std: torch.Tensor) -> torch.Tensor:
    return (log_std + 0.5 * math.log(2 * math.pi * math.e)).sum(-1)


def log_one_minus_tanh_sq(u: torch.Tensor) -> torch.Tensor:
    """log(1 - tanh(u)^2) = 2 (log 2 - u - softplus(-2u)), finite even where tanh(u) rounds to +-1."""
    return 2.0 * (math.log(2.0) - u - F.softplus(-2.0 * u))


def tanh_gaussian_log_prob(u: torch.Tensor, mean: torch.Tensor, log_std: torch.Tensor) -> torch.Tensor:
    """log pi(a) for a = tanh(u), u ~ N(mean, std): the Gaussian term minus the Jacobian log|da/du|."""
    return gaussian_log_prob(u, mean, log_std) - log_one_minus_tanh_sq(u).sum(-1)


def atanh_clamped(a: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """Pre-tanh value of an action in [-1, 1] (demo actions on the bound would be infinite)."""
    return torch.atanh(a.clamp(-1.0 + eps, 1.0 - eps))


# --------------------------------------------------------------------------- building blocks
def mlp(in_dim: int, hidden_sizes: list[int], out_dim: int | None, activation: str = "relu") -> nn.Sequential:
    layers: list[nn.Module] = []
    last = in_dim
    for width in hidden_sizes:
        layers += [nn.Linear(last, width), _ACTIVATIONS[activation]()]
        last = width
    if out_dim is not None:
        layers.append(nn.Linear(last, out_dim))
    return nn.Sequential(*layers)


class FlatObsEncoder(nn.Module):
    """Concatenate the named observation entries, flattened, in the given key order."""

    def __init__(self, obs_dims: dict[str, int]):
        super().__init__()
        self.keys = list(obs_dims)
        self.out_dim = sum(obs_dims.values())

    def forward(self, obs: ObsBatch) -> torch.Tensor:
        return torch.cat([obs[k].flatten(1).float() for k in self.keys], dim=-1)


class MLPBackbone(nn.Module):
    """Observation encoder followed by an MLP trunk: obs batch -> (B, hidden_sizes[-1])."""

    def __init__(self, obs_dims: dict[str, int], hidden_sizes: list[int], activation: str = "relu"):
        super().__init__()
        self.encoder = FlatObsEncoder(obs_dims)
        self.trunk = mlp(self.encoder.out_dim, hidden_sizes, None, activation)
        self.out_dim = hidden_sizes[-1] if hidden_sizes else self.encoder.out_dim

    def forward(self, obs: ObsBatch) -> torch.Tensor:
        return self.trunk(self.encoder(obs))


# --------------------------------------------------------------------------- actors and critics
class GaussianActor(nn.Module):
    """PPO's policy: mean from the backbone, state-independent log std (ManiSkill2-Learn's default)."""

    def __init__(self, backbone: nn.Module, action_dim: int, init_log_std: float = -0.5, detach_feature: bool = False):
        super().__init__()
        self.backbone = backbone
        self.detach_feature = detach_feature
        self.mean_head = nn.Linear(backbone.out_dim, action_dim)
        nn.init.orthogonal_(self.mean_head.weight, gain=0.01)
        nn.init.zeros_(self.mean_head.bias)
        self.log_std = nn.Parameter(torch.full((action_dim,), float(init_log_std)))

    def forward(self, obs: ObsBatch) -> tuple[torch.Tensor, torch.Tensor]:
        feature = self.backbone(obs)
        if self.detach_feature:
            feature = feature.detach()
        mean = self.mean_head(feature)
        return mean, self.log_std.expand_as(mean)


class TanhGaussianActor(nn.Module):
    """SAC's policy: a = tanh(u), u ~ N(mean(s), std(s)); actions live in [-1, 1]."""

    def __init__(self, backbone: nn.Module, action_dim: int):
        super().__init__()
        self.backbone = backbone
        self.head = nn.Linear(backbone.out_dim, 2 * action_dim)

    def forward(self, obs: ObsBatch) -> tuple[torch.Tensor, torch.Tensor]:
        mean, log_std = self.head(self.backbone(obs)).chunk(2, dim=-1)
        return mean, log_std.clamp(LOG_STD_MIN, LOG_STD_MAX)

    def sample(self, obs: ObsBatch) -> tuple[torch.Tensor, torch.Tensor]:
        """Reparameterised action and its log-probability."""
        mean, log_std = self(obs)
        u = mean + torch.exp(log_std) * torch.randn_like(mean)
        return torch.tanh(u), tanh_gaussian_log_prob(u, mean, log_std)

    def act_deterministic(self, obs: ObsBatch) -> torch.Tensor:
        return torch.tanh(self(obs)[0])


class ValueCritic(nn.Module):
    def __init__(self, backbone: nn.Module):
        super().__init__()
        self.backbone = backbone
        self.head = nn.Linear(backbone.out_dim, 1)

    def forward(self, obs: ObsBatch) -> torch.Tensor:
        return self.head(self.backbone(obs)).squeeze(-1)


class QCritic(nn.Module):
    """Q(s, a): observation features concatenated with the action, then an MLP."""

    def __init__(self, obs_dims: dict[str, int], action_dim: int, hidden_sizes: list[int], activation: str = "relu",
                 encoder: nn.Module | None = None):
        super().__init__()
        self.encoder = encoder if encoder is not None else FlatObsEncoder(obs_dims)
        self.net = mlp(self.encoder.out_dim + action_dim, hidden_sizes, 1, activation)

    def forward(self, obs: ObsBatch, action: torch.Tensor) -> torch.Tensor:
        return self.net(torch.cat([self.encoder(obs), action], dim=-1)).squeeze(-1)


class TwinQ(nn.Module):
    """Two independent Q networks (clipped double-Q)."""

    def __init__(self, obs_dims: dict[str, int], action_dim: int, hidden_sizes: list[int], activation: str = "relu"):
        super().__init__()
        self.q1 = QCritic(obs_dims, action_dim, hidden_sizes, activation)
        self.q2 = QCritic(obs_dims, action_dim, hidden_sizes, activation)

    def forward(self, obs: ObsBatch, action: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.q1(obs, action), self.q2(obs, action)


class Discriminator(QCritic):
    """GAIL's D(s, a) as a logit: sigmoid(logit) -> 1 for demo-like pairs."""


# --------------------------------------------------------------------------- FrameMiner-MixAction
def quaternion_to_matrix(quat_wxyz: torch.Tensor) -> torch.Tensor:
    """(B, 4) unit quaternions (w, x, y, z; SAPIEN's order) -> (B, 3, 3) rotation matrices."""
    q = quat_wxyz / quat_wxyz.norm(dim=-1, keepdim=True)
    w, x, y, z = q.unbind(-1)
    return torch.stack([
        1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y),
        2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x),
        2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y),
    ], dim=-1).reshape(*q.shape[:-1], 3, 3)


def points_to_frame(xyz: torch.Tensor, frame_pos: torch.Tensor, frame_quat_wxyz: torch.Tensor) -> torch.Tensor:
    """Express world points (B, N, 3) in a frame with world pose (pos (B, 3), quat (B, 4)): R^T (p - t)."""
    rot = quaternion_to_matrix(frame_quat_wxyz)
    return torch.einsum("bji,bnj->bni", rot, xyz - frame_pos[:, None, :])


class MixActionActor(nn.Module):
    """FrameMiner-MixAction (Liu et al., 2022): one point-cloud branch per candidate frame, mixed at the action level.

    Each branch sees the point cloud expressed in its own frame (world, robot
    base, end effector, goal, ...; ``frames[k](obs)`` returns that frame's world
    pose, or None for the world frame), proposes an action mean, and a gate on
    the concatenated branch features weights the proposals with a softmax.
    ``branches[k]`` is any backbone (ms2core.nn's PointNet after merge). The
    output has the GaussianActor interface, so PPO/DAPG use it unchanged.
    """

    def __init__(self, frames: list, branches: list[nn.Module], action_dim: int, init_log_std: float = -0.5,
                 xyz_key: str = "xyz"):
        super().__init__()
        if len(frames) != len(branches) or not branches:
            raise ValueError(f"MixActionActor needs one branch per frame, got {len(frames)} frames, {len(branches)} branches")
        self.frames, self.xyz_key = frames, xyz_key
        self.branches = nn.ModuleList(branches)
        self.heads = nn.ModuleList(nn.Linear(b.out_dim, action_dim) for b in branches)
        self.gate = nn.Linear(sum(b.out_dim for b in branches), len(branches))
        self.log_std = nn.Parameter(torch.full((action_dim,), float(init_log_std)))

    def branch_inputs(self, obs: ObsBatch) -> list[ObsBatch]:
        out = []
        for frame in self.frames:
            pose = frame(obs) if frame is not None else None
            xyz = obs[self.xyz_key] if pose is None else points_to_frame(obs[self.xyz_key].float(), *pose)
            out.append({**obs, self.xyz_key: xyz})
        return out

    def forward(self, obs: ObsBatch) -> tuple[torch.Tensor, torch.Tensor]:
        features = [branch(o) for branch, o in zip(self.branches, self.branch_inputs(obs))]
        proposals = torch.stack([head(f) for head, f in zip(self.heads, features)], dim=1)   # (B, K, A)
        weights = torch.softmax(self.gate(torch.cat(features, dim=-1)), dim=-1)              # (B, K)
        mean = (weights[..., None] * proposals).sum(1)
        return mean, self.log_std.expand_as(mean)
