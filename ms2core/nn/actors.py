"""The online algorithms' networks: observation backbones, Gaussian / tanh-Gaussian actors, critics.

Interfaces the algorithms rely on (ms2core.algos.ppo, dapg, sac, gail):

* a *backbone* maps a processed-observation batch ``{key: (B, ...)}`` to features
  ``(B, F)`` and has an ``out_dim`` attribute (``make_backbone``: MLP, PointNet, FrameMiner);
* an *actor* maps observations to distribution parameters ``(mean, log_std)``
  (FrameMiner-MixAction's actor is ``ms2core.nn.frameminer.MixActionActor``);
* a *critic* maps observations (and actions) to values ``(B,)``.

The distribution maths (Gaussian and tanh-Gaussian log-probabilities) lives once, in ``ms2core.nn.heads``.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from ms2core.errors import ConfigError
from ms2core.nn.encoders import make_mlp
from ms2core.nn.heads import LOG_STD_MAX, LOG_STD_MIN, tanh_gaussian_log_prob

ObsBatch = dict[str, torch.Tensor]


# --------------------------------------------------------------------------- building blocks
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
        self.trunk = make_mlp(self.encoder.out_dim, hidden_sizes, None, activation)
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
        self.net = make_mlp(self.encoder.out_dim + action_dim, hidden_sizes, 1, activation)

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


# --------------------------------------------------------------------------- encoder choice (net.backbone)
def resolve_backbone_kind(name: str, obs_shapes: dict[str, tuple[int, ...]]) -> str:
    """``net.backbone`` with ``auto`` resolved: pointnet where the observation is a point cloud, else mlp."""
    if name == "auto":
        return "pointnet" if "xyz" in obs_shapes else "mlp"
    if name == "cnn":
        raise ConfigError("net.backbone=cnn is BC's image encoder; the online algorithms have none",
                          hint="use net.backbone=mlp or pointnet (rollout.env.obs_mode=pointcloud)")
    if name in ("pointnet", "frameminer_mixaction"):
        missing = [k for k in ("xyz", "rgb", "state") if k not in obs_shapes]
        if missing:
            raise ConfigError(f"net.backbone={name!r} needs point-cloud observations (xyz, rgb, state), "
                              f"but the env gives {sorted(obs_shapes)} (missing {missing})",
                              hint="set rollout.env.obs_mode=pointcloud, or net.backbone=mlp")
    return name


def make_backbone(kind: str, obs_shapes: dict[str, tuple[int, ...]], net_cfg, frames=None) -> nn.Module:
    """One observation encoder of ``kind`` (resolved): obs batch -> (B, out_dim) features."""
    if kind == "mlp":
        dims = {k: int(math.prod(v)) for k, v in obs_shapes.items()}
        return MLPBackbone(dims, net_cfg.hidden_sizes, net_cfg.activation)
    from ms2core.nn.encoders import PointNetEncoder
    from ms2core.nn.frameminer import FrameMinerBackbone

    state_dim = int(obs_shapes["state"][-1])
    if kind == "pointnet":
        return PointNetEncoder(state_dim, net_cfg.pointnet_point_mlp, net_cfg.hidden_sizes, net_cfg.activation,
                               normalize_state=False)
    if frames is None:
        raise ConfigError("net.backbone=frameminer_mixaction needs the frames resolved from the env's state layout",
                          hint="build it through ms2core.algos.ppo.train_ppo or pass frames=")
    return FrameMinerBackbone(frames, state_dim, net_cfg.pointnet_point_mlp, net_cfg.hidden_sizes, net_cfg.activation)
