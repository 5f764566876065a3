"""BC's policy = encoder (chosen by obs mode) + head; ``build_policy`` makes one from the ``net`` section."""

from __future__ import annotations

import torch
from torch import nn

from ms2core.errors import ConfigError
from ms2core.nn.encoders import CNNEncoder, PointNetEncoder, StateEncoder
from ms2core.nn.heads import ActionDist, DeterministicHead, GaussianHead, TanhGaussianHead
from storage_schemas.training import NetConfig

POINTCLOUD_MODES = ("pointcloud", "pointcloud_robot_seg")
RGBD_MODES = ("rgbd", "rgbd_robot_seg")


def network_kind_for(obs_mode: str, cfg: NetConfig) -> str:
    if cfg.backbone == "frameminer_mixaction":
        raise ConfigError("net.backbone=frameminer_mixaction is PPO/DAPG's; BC has mlp, pointnet and cnn",
                          hint="use net.backbone=auto (from the obs mode), mlp, pointnet or cnn")
    if cfg.backbone != "auto":
        return cfg.backbone
    if obs_mode in POINTCLOUD_MODES:
        return "pointnet"
    if obs_mode in RGBD_MODES:
        return "cnn"
    return "mlp"


class Policy(nn.Module):
    def __init__(self, encoder: nn.Module, head: nn.Module):
        super().__init__()
        self.encoder = encoder
        self.head = head

    @property
    def deterministic(self) -> bool:
        return isinstance(self.head, DeterministicHead)

    def forward(self, obs: dict[str, torch.Tensor]):
        return self.head(self.encoder(obs))

    @torch.no_grad()
    def act(self, obs: dict[str, torch.Tensor], sample_mode: str = "mean",
            generator: torch.Generator | None = None) -> torch.Tensor:
        out = self(obs)
        if isinstance(out, ActionDist):
            return out.mode() if sample_mode == "mean" else out.sample(generator)
        return out

    def set_state_stats(self, mean, std) -> None:
        self.encoder.normalizer.set_stats(mean, std)


def build_policy(cfg: NetConfig, obs_mode: str, obs_shapes: dict[str, tuple[int, ...]], action_dim: int) -> Policy:
    """``obs_shapes`` are per-step shapes of the processed obs (e.g. {"xyz": (1250, 3), "state": (S,)})."""
    kind = network_kind_for(obs_mode, cfg)
    needed = {"mlp": ("state",), "pointnet": ("xyz", "rgb", "state"), "cnn": ("rgb", "depth", "state")}[kind]
    missing = [k for k in needed if k not in obs_shapes]
    if missing:
        raise ConfigError(
            f"network {kind!r} needs observation keys {list(needed)} but the data has {sorted(obs_shapes)} "
            f"(missing {missing})",
            hint="set net.backbone to match the dataset's obs mode, or use net.backbone=auto",
        )
    state_dim = int(obs_shapes["state"][-1])
    if kind == "mlp":
        encoder = StateEncoder(state_dim, cfg.hidden_sizes, cfg.activation, cfg.normalize_state)
    elif kind == "pointnet":
        encoder = PointNetEncoder(state_dim, cfg.pointnet_point_mlp, cfg.hidden_sizes, cfg.activation,
                                  cfg.normalize_state)
    else:
        rgb_shape, depth_shape = tuple(obs_shapes["rgb"]), tuple(obs_shapes["depth"])
        # (H, W, 3C) + (H, W, C) in ms2flow's layout, (3C, H, W) + (C, H, W) in the ml2l layout: never both.
        channels_first = rgb_shape[1:] == depth_shape[1:] and rgb_shape[:2] != depth_shape[:2]
        (h, w), rgb_ch, depth_ch = ((rgb_shape[1:], rgb_shape[0], depth_shape[0]) if channels_first
                                    else (rgb_shape[:2], rgb_shape[-1], depth_shape[-1]))
        encoder = CNNEncoder((h, w), rgb_ch + depth_ch, state_dim, cfg.hidden_sizes, cfg.cnn_kind, cfg.activation,
                             cfg.normalize_state, cfg.depth_max_m, channels_first)
    if cfg.head == "deterministic":
        head = DeterministicHead(encoder.out_dim, action_dim)
    elif cfg.head == "gaussian":
        head = GaussianHead(encoder.out_dim, action_dim, cfg.init_log_std)
    else:
        head = TanhGaussianHead(encoder.out_dim, action_dim, cfg.init_log_std)
    return Policy(encoder, head)
