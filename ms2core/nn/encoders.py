"""Observation encoders: processed-obs dict -> feature vector.

Normalisation (kept inside the modules so a checkpoint evaluates exactly as it trained):
- ``state`` is standardised with per-dimension mean/std buffers set from the
  dataset (``set_state_stats``); std is floored at 1e-2 so constant dims stay finite.
- point clouds: per point ``concat(xyz in metres, rgb / 255)``.
- images: ``rgb / 255`` and ``clip(depth, 0, depth_max_m) / depth_max_m``,
  all cameras stacked as channels (same resolution), channels-last in storage.
"""

from __future__ import annotations

import torch
from torch import nn

ACTIVATIONS = {"relu": nn.ReLU, "elu": nn.ELU, "gelu": nn.GELU, "tanh": nn.Tanh}


def make_mlp(in_dim: int, hidden: list[int], out_dim: int | None = None, activation: str = "relu",
             final_activation: bool = False) -> nn.Sequential:
    layers: list[nn.Module] = []
    dims = [in_dim, *hidden]
    for a, b in zip(dims[:-1], dims[1:]):
        layers += [nn.Linear(a, b), ACTIVATIONS[activation]()]
    if out_dim is not None:
        layers.append(nn.Linear(dims[-1], out_dim))
        if final_activation:
            layers.append(ACTIVATIONS[activation]())
    return nn.Sequential(*layers)


MLP = make_mlp


class StateNormalizer(nn.Module):
    def __init__(self, state_dim: int, enabled: bool = True):
        super().__init__()
        self.enabled = enabled
        self.register_buffer("mean", torch.zeros(state_dim))
        self.register_buffer("std", torch.ones(state_dim))

    def set_stats(self, mean, std) -> None:
        self.mean.copy_(torch.as_tensor(mean, dtype=torch.float32))
        self.std.copy_(torch.as_tensor(std, dtype=torch.float32).clamp_min(1e-2))

    def forward(self, state: torch.Tensor) -> torch.Tensor:
        state = state.float()
        return (state - self.mean) / self.std if self.enabled else state


class StateEncoder(nn.Module):
    """State mode: an MLP on ``obs['state']``."""

    def __init__(self, state_dim: int, hidden: list[int], activation: str = "relu", normalize_state: bool = True):
        super().__init__()
        self.normalizer = StateNormalizer(state_dim, normalize_state)
        self.mlp = make_mlp(state_dim, hidden, activation=activation)
        self.out_dim = hidden[-1] if hidden else state_dim

    def forward(self, obs: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.mlp(self.normalizer(obs["state"]))


def unit_rgb(rgb: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """Colours in [0, 1]: uint8 (ms2flow layout) is divided by 255, floats (ml2l layout) are in [0, 1] already."""
    return rgb.to(dtype) / 255.0 if rgb.dtype == torch.uint8 else rgb.to(dtype)


class PointNetEncoder(nn.Module):
    """ManiSkill2-Learn's PointNet: per-point MLP [64,128,512] -> max-pool -> concat state -> MLP [256,256]."""

    def __init__(self, state_dim: int, point_mlp: list[int], hidden: list[int], activation: str = "relu",
                 normalize_state: bool = True, point_feature_dim: int = 6):
        super().__init__()
        self.normalizer = StateNormalizer(state_dim, normalize_state)
        self.point_mlp = make_mlp(point_feature_dim, point_mlp, activation=activation)
        self.mlp = make_mlp(point_mlp[-1] + state_dim, hidden, activation=activation)
        self.out_dim = hidden[-1]

    def forward(self, obs: dict[str, torch.Tensor]) -> torch.Tensor:
        xyz = obs["xyz"].to(self.mlp[0].weight.dtype)
        rgb = unit_rgb(obs["rgb"], xyz.dtype)
        points = torch.cat([xyz, rgb], dim=-1)  # (B, N, 6)
        per_point = self.point_mlp(points)  # Linear on the last dim = shared 1x1 conv
        pooled = per_point.amax(dim=1)
        return self.mlp(torch.cat([pooled, self.normalizer(obs["state"]).to(pooled.dtype)], dim=-1))


class _ImpalaBlock(nn.Module):
    def __init__(self, in_ch: int, out_ch: int):
        super().__init__()
        self.conv = nn.Conv2d(in_ch, out_ch, 3, padding=1)
        self.pool = nn.MaxPool2d(3, 2, padding=1)
        self.res = nn.ModuleList(
            [nn.Sequential(nn.ReLU(), nn.Conv2d(out_ch, out_ch, 3, padding=1), nn.ReLU(),
                           nn.Conv2d(out_ch, out_ch, 3, padding=1)) for _ in range(2)]
        )

    def forward(self, x):
        x = self.pool(self.conv(x))
        for block in self.res:
            x = x + block(x)
        return x


class CNNEncoder(nn.Module):
    """RGB-D: all cameras' ``rgb/255`` and scaled depth stacked as channels -> Nature-CNN or IMPALA -> concat state -> MLP."""

    def __init__(self, image_hw: tuple[int, int], in_channels: int, state_dim: int, hidden: list[int],
                 kind: str = "nature", activation: str = "relu", normalize_state: bool = True,
                 depth_max_m: float = 4.0, channels_first: bool = False):
        super().__init__()
        self.depth_max_m = depth_max_m
        self.channels_first = channels_first  # the ml2l layout's (C, H, W) images; ms2flow's are (H, W, C)
        self.normalizer = StateNormalizer(state_dim, normalize_state)
        act = ACTIVATIONS[activation]
        if kind == "nature":
            self.conv = nn.Sequential(
                nn.Conv2d(in_channels, 32, 8, 4), act(), nn.Conv2d(32, 64, 4, 2), act(),
                nn.Conv2d(64, 64, 3, 1), act(), nn.Flatten(),
            )
        elif kind == "impala":
            self.conv = nn.Sequential(
                _ImpalaBlock(in_channels, 16), _ImpalaBlock(16, 32), _ImpalaBlock(32, 32), nn.ReLU(), nn.Flatten(),
            )
        else:
            raise ValueError(f"unknown CNN kind {kind!r}; allowed: nature, impala")
        try:
            with torch.no_grad():
                conv_dim = self.conv(torch.zeros(1, in_channels, *image_hw)).shape[1]
        except RuntimeError as exc:
            from ms2core.errors import ConfigError

            raise ConfigError(f"images of {image_hw[0]}x{image_hw[1]} are too small for the {kind} CNN ({exc})",
                              hint="the Nature-CNN needs at least 36x36; use network.cnn_kind=impala") from exc
        self.mlp = make_mlp(conv_dim + state_dim, hidden, activation=activation)
        self.out_dim = hidden[-1]

    def forward(self, obs: dict[str, torch.Tensor]) -> torch.Tensor:
        dtype = self.mlp[0].weight.dtype
        rgb = unit_rgb(obs["rgb"], dtype)
        depth = obs["depth"].to(dtype).clamp(0, self.depth_max_m) / self.depth_max_m
        if self.channels_first:
            image = torch.cat([rgb, depth], dim=1)
        else:
            image = torch.cat([rgb, depth], dim=-1).permute(0, 3, 1, 2)  # (B, C, H, W)
        return self.mlp(torch.cat([self.conv(image), self.normalizer(obs["state"]).to(dtype)], dim=-1))
