"""ManiSkill2-Learn (ML2L) policies in ms2flow: read its config and checkpoint, act like its actor.

An ML2L checkpoint (``save_checkpoint(agent, path)``) is ``{"meta", "state_dict"[, "optimizer"]}``;
the actor's weights sit under ``actor.``. For the PointNet policy of its configs
(``configs/brl/bc/pointnet.py``, ``configs/mfrl/{ppo,dapg,gail}/maniskill2_pn.py``)::

    actor.backbone.visual_nn.conv.mlp.layer{i}.conv.weight   (C_out, C_in, 1)  1x1 conv, no bias under a norm
    actor.backbone.visual_nn.conv.mlp.layer{i}.norm.*        LayerNorm over channels (LN1d) or BatchNorm1d
    actor.backbone.final_mlp.mlp.linear{i}.weight/bias       MLP on concat(max-pooled point feature, state)
    actor.backbone.final_mlp.mlp.norm{i}.*                   only with a norm_cfg
    actor.head.lb / ub / scale / bias                        action bounds; scale = (ub-lb)/2, bias = (ub+lb)/2
    actor.head.noise_std (TanhHead) | actor.head.log_std (GaussianHead, predict_std=False)

Forward (ML2L's ``mode="eval"``): per point ``concat(xyz, rgb[, seg])`` -> every 1x1 conv
layer followed by its norm and ReLU (the last one included) -> max over points -> concat the
``state`` -> linear layers with ReLU between them -> ``tanh`` -> ``* scale + bias`` (clamped
to [lb, ub] for GaussianHead). Observations must be in the ml2l layout (ms2core.obs_ml2l),
which is what ML2L trained on. Layer widths come from the weights; the config says the
structure (head, norms, activation) and the env.

Configs are read without running them: the file's top-level ``name = dict(...)`` assignments
are evaluated over literals only (dict/list/tuple calls, numbers, strings), so a config from
elsewhere cannot execute code here.
"""

from __future__ import annotations

import ast
import os
import re
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from ms2core.errors import CheckpointError, ConfigError

ACTOR_PREFIX = "actor."
_POINT = re.compile(r"^backbone\.visual_nn\.conv\.mlp\.layer(\d+)\.(conv|norm)\.(\w+)$")
_MLP = re.compile(r"^backbone\.final_mlp\.mlp\.(linear|norm)(\d+)\.(\w+)$")
_HEAD = re.compile(r"^head\.(lb|ub|scale|bias|noise_std|log_std)$")
HEADS = {"TanhHead": "tanh", "GaussianHead": "gaussian"}
ACTIVATIONS = {"ReLU": nn.ReLU, "LeakyReLU": nn.LeakyReLU, "ELU": nn.ELU, "GELU": nn.GELU, "Tanh": nn.Tanh}
ML2L_DEFAULT_CONTROL_MODE = "pd_joint_delta_pos"  # ManiSkill2's Panda default, which ML2L uses unless told


# -- config -------------------------------------------------------------------------------------
def _literal(node: ast.AST, path: str) -> Any:
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in ("dict", "list", "tuple",
                                                                                              "int", "float"):
        args = [_literal(a, path) for a in node.args]
        kwargs = {k.arg: _literal(k.value, path) for k in node.keywords}
        return {"dict": dict, "list": list, "tuple": tuple, "int": int, "float": float}[node.func.id](*args, **kwargs)
    if isinstance(node, (ast.BinOp, ast.UnaryOp)):
        value = ast.literal_eval(ast.unparse(node))  # numbers only, e.g. 5e6 or -1
        return value
    try:
        return ast.literal_eval(node)
    except ValueError as exc:
        raise ConfigError(f"ML2L config {path}: {ast.unparse(node)!r} is not a literal ms2flow can read",
                          hint="ML2L configs made of dict(...)/lists/numbers/strings are supported; "
                               "flatten _base_ inheritance or computed values into the file") from exc


def read_ml2l_config(path: str | os.PathLike) -> dict[str, Any]:
    """The top-level assignments of an ML2L ``.py`` config (agent_cfg, env_cfg, ...), read as literals."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"ML2L config {path} does not exist", hint="pass the .py config the checkpoint was trained "
                                                                     "with, e.g. configs/brl/bc/pointnet.py")
    tree = ast.parse(path.read_text(), str(path))
    out: dict[str, Any] = {}
    for stmt in tree.body:
        if isinstance(stmt, ast.Assign) and len(stmt.targets) == 1 and isinstance(stmt.targets[0], ast.Name):
            out[stmt.targets[0].id] = _literal(stmt.value, str(path))
    if "agent_cfg" not in out:
        raise ConfigError(f"ML2L config {path} has no agent_cfg", hint="pass a ManiSkill2-Learn training config")
    return out


def set_option(cfg: dict, dotted: str) -> None:
    """ML2L's ``--cfg-options key.sub=value`` on a read config (the value parsed as YAML)."""
    import yaml

    key, sep, raw = dotted.partition("=")
    if not sep:
        raise ConfigError(f"ML2L config option {dotted!r} is not KEY=VALUE",
                          hint="e.g. env_cfg.control_mode=pd_ee_delta_pose")
    *parents, leaf = key.strip().split(".")
    node = cfg
    for part in parents:
        node = node.setdefault(part, {})
    node[leaf] = yaml.safe_load(raw)


# -- network ------------------------------------------------------------------------------------
class ML2LPointNetActor(nn.Module):
    """ML2L's Visuomotor(PointNet) + LinearMLP + Tanh/Gaussian head, as plain torch modules."""

    def __init__(self, point_widths: list[int], mlp_widths: list[int], head: str, action_low, action_high,
                 point_norm: str | None = "LN1d", mlp_norm: str | None = None, norm_eps: float = 1e-6,
                 activation: str = "ReLU", point_keys: tuple[str, ...] = ("xyz", "rgb")):
        super().__init__()
        self.point_keys = point_keys
        self.head_kind = head
        self.activation = ACTIVATIONS[activation]()
        self.point_convs = nn.ModuleList(nn.Conv1d(a, b, 1, bias=point_norm is None)
                                         for a, b in zip(point_widths[:-1], point_widths[1:]))
        self.point_norms = nn.ModuleList(_norm(point_norm, b, norm_eps) for b in point_widths[1:])
        self.linears = nn.ModuleList(nn.Linear(a, b, bias=mlp_norm is None or i == len(mlp_widths) - 2)
                                     for i, (a, b) in enumerate(zip(mlp_widths[:-1], mlp_widths[1:])))
        self.mlp_norms = nn.ModuleList(_norm(mlp_norm, b, norm_eps) for b in mlp_widths[1:-1])
        low = torch.as_tensor(action_low, dtype=torch.float32)
        high = torch.as_tensor(action_high, dtype=torch.float32)
        self.register_buffer("action_low", low)
        self.register_buffer("action_high", high)
        self.register_buffer("scale", (high - low) / 2)
        self.register_buffer("offset", (high + low) / 2)
        # TanhHead: a fixed exploration std (ML2L's noise_std); GaussianHead: a learnt log std.
        self.std_param = nn.Parameter(torch.zeros(len(low)), requires_grad=False)

    def features(self, obs: dict[str, torch.Tensor]) -> torch.Tensor:
        dtype = self.point_convs[0].weight.dtype
        points = torch.cat([obs[k].to(dtype) for k in self.point_keys if k in obs], dim=-1)  # (B, N, C)
        x = points.transpose(1, 2)  # (B, C, N): 1x1 convs over points
        if x.shape[1] != self.point_convs[0].in_channels:
            raise ConfigError(f"the ML2L PointNet takes {self.point_convs[0].in_channels} channels per point "
                              f"({'+'.join(self.point_keys)}), the observation gives {x.shape[1]}",
                              hint="evaluate with the obs layout ml2l (float rgb in [0, 1]; seg only if trained with)")
        for conv, norm in zip(self.point_convs, self.point_norms):
            x = self.activation(_apply_norm(norm, conv(x)))
        state = obs["state"].to(dtype)
        expected = self.linears[0].in_features - x.shape[1]
        if state.shape[-1] != expected:
            raise ConfigError(f"the ML2L actor was trained on a state of {expected} entries, the observation has "
                              f"{state.shape[-1]}", hint="ML2L's point-cloud state for PickCube-v0 has 30 entries "
                              "(obs layout ml2l); check the task and env_cfg of the config")
        return torch.cat([x.amax(dim=-1), state], dim=-1)

    def pre_tanh(self, obs: dict[str, torch.Tensor]) -> torch.Tensor:
        x = self.features(obs)
        for i, linear in enumerate(self.linears):
            x = linear(x)
            if i < len(self.mlp_norms):
                x = self.activation(_apply_norm(self.mlp_norms[i], x))
        return x

    def forward(self, obs: dict[str, torch.Tensor]) -> torch.Tensor:
        """ML2L's ``actor(obs, mode="eval")``."""
        action = torch.tanh(self.pre_tanh(obs)) * self.scale + self.offset
        return self._clip(action)

    def _clip(self, action: torch.Tensor) -> torch.Tensor:
        if self.head_kind == "gaussian":  # GaussianHead clip_return
            return torch.maximum(torch.minimum(action, self.action_high), self.action_low)
        return action

    @torch.no_grad()
    def act(self, obs: dict[str, torch.Tensor], sample_mode: str = "mean",
            generator: torch.Generator | None = None) -> torch.Tensor:
        """``mean``: ML2L's eval mode; ``sample``: its explore mode, Normal(mean, std * scale) in env units."""
        if sample_mode == "mean":
            return self(obs)
        mean = torch.tanh(self.pre_tanh(obs)) * self.scale + self.offset
        std = self.std_param if self.head_kind == "tanh" else self.std_param.clamp(-20, 2).exp()
        noise = torch.randn(mean.shape, generator=generator, dtype=mean.dtype, device=mean.device)
        return self._clip(mean + noise * std * self.scale)


def _norm(kind: str | None, width: int, eps: float) -> nn.Module:
    if kind is None:
        return nn.Identity()
    if kind in ("LN1d", "LN"):
        return nn.LayerNorm(width, eps=eps)
    if kind == "BN1d":
        return nn.BatchNorm1d(width, eps=eps)
    raise ConfigError(f"ML2L norm {kind!r} is not supported", hint="LN1d, LN, BN1d or none")


def _apply_norm(norm: nn.Module, x: torch.Tensor) -> torch.Tensor:
    if isinstance(norm, nn.LayerNorm) and x.ndim == 3:  # channels first (B, C, N): normalise over C per point
        return F.layer_norm(x.transpose(1, 2), norm.normalized_shape, norm.weight, norm.bias, norm.eps).transpose(1, 2)
    return norm(x)


# -- checkpoint -> actor ------------------------------------------------------------------------
def _actor_state(path: Path) -> dict[str, torch.Tensor]:
    if not path.is_file():
        raise CheckpointError(f"ML2L checkpoint {path} does not exist",
                              hint="pass a model_*.ckpt from an ML2L work dir")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unreadable file is the same user error
        raise CheckpointError(f"ML2L checkpoint {path} is not readable: {exc}",
                              hint="ML2L's save_checkpoint writes {'meta', 'state_dict'}; "
                                   "the file may be truncated") from exc
    state = payload.get("state_dict") if isinstance(payload, dict) else None
    actor = {k[len(ACTOR_PREFIX):]: v for k, v in (state or {}).items() if k.startswith(ACTOR_PREFIX)}
    if not actor:
        raise CheckpointError(f"{path} has no ML2L actor weights (no state_dict keys starting with 'actor.')",
                              hint="pass a checkpoint saved by ManiSkill2-Learn's save_checkpoint(agent, ...)")
    return actor


def _point_net_cfg(actor_cfg: dict, path) -> tuple[dict, dict, dict]:
    nn_cfg = actor_cfg.get("nn_cfg") or {}
    visual = nn_cfg.get("visual_nn_cfg") or {}
    if nn_cfg.get("type") != "Visuomotor" or visual.get("type") != "PointNet":
        raise ConfigError(f"ML2L config {path}: actor network {nn_cfg.get('type')}/{visual.get('type')} "
                          "is not supported",
                          hint="ms2flow loads ML2L's Visuomotor(PointNet) actors (configs/brl/bc/pointnet.py, "
                               "configs/mfrl/*/maniskill2_pn.py)")
    if visual.get("feature_transform", [1]):
        raise ConfigError(f"ML2L config {path}: PointNet feature_transform {visual.get('feature_transform', [1])} "
                          "(spatial transformer) is not supported", hint="ML2L's RL configs use feature_transform=[]")
    return nn_cfg, visual, nn_cfg.get("mlp_cfg") or {}


def _norm_kind(cfg: dict | None, default: str | None) -> str | None:
    return cfg.get("type") if isinstance(cfg, dict) else (None if cfg is None else default)


def build_actor(actor_cfg: dict, weights: dict[str, torch.Tensor], path="config") -> ML2LPointNetActor:
    """An ML2LPointNetActor with the config's structure and the weights' widths, weights loaded."""
    _, visual, mlp_cfg = _point_net_cfg(actor_cfg, path)
    head_type = (actor_cfg.get("head_cfg") or {}).get("type")
    if head_type not in HEADS:
        raise ConfigError(f"ML2L config {path}: head {head_type!r} is not supported", hint=f"one of {sorted(HEADS)}")
    point_w = sorted((int(m[1]), v) for k, v in weights.items()
                     if (m := _POINT.match(k)) and m.group(2, 3) == ("conv", "weight"))
    linear_w = sorted((int(m[2]), v) for k, v in weights.items() if (m := _MLP.match(k)) and m[1] == "linear"
                      and m[3] == "weight")
    if not point_w or not linear_w or "head.lb" not in weights:
        raise CheckpointError(f"the checkpoint's actor weights are not an ML2L PointNet actor (keys: "
                              f"{sorted(weights)[:6]}...)", hint="pass the checkpoint that goes with this config")
    point_widths = [point_w[0][1].shape[1]] + [w.shape[0] for _, w in point_w]
    mlp_widths = [linear_w[0][1].shape[1]] + [w.shape[0] for _, w in linear_w]
    act = (visual.get("act_cfg") or {"type": "ReLU"})["type"]
    if act not in ACTIVATIONS:
        raise ConfigError(f"ML2L activation {act!r} is not supported", hint=f"one of {sorted(ACTIVATIONS)}")
    point_norm = _norm_kind(visual.get("norm_cfg", {"type": "LN1d"}), "LN1d")
    mlp_norm = _norm_kind(mlp_cfg.get("norm_cfg", {"type": "LN1d"}), "LN1d")
    eps = float((visual.get("norm_cfg") or {}).get("eps", 1e-6 if point_norm == "LN1d" else 1e-5))
    keys = ("xyz", "rgb", "seg")[: 3 if point_widths[0] > 6 else 2 if point_widths[0] > 3 else 1]
    actor = ML2LPointNetActor(point_widths, mlp_widths, HEADS[head_type], weights["head.lb"], weights["head.ub"],
                              point_norm, mlp_norm, eps, act, keys)
    try:
        actor.load_state_dict(_to_ms2flow_keys(weights), strict=True)
    except RuntimeError as exc:
        raise CheckpointError(f"the ML2L actor weights do not fit the network its config describes: {exc}",
                              hint="pass the config the checkpoint was trained with") from exc
    return actor.eval()


def _to_ms2flow_keys(weights: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """ML2L's actor state-dict keys -> ML2LPointNetActor's (the table in the module docstring)."""
    out: dict[str, torch.Tensor] = {}
    for key, value in weights.items():
        if m := _POINT.match(key):
            out[f"point_{'convs' if m[2] == 'conv' else 'norms'}.{m[1]}.{m[3]}"] = value
        elif m := _MLP.match(key):
            out[f"{'linears' if m[1] == 'linear' else 'mlp_norms'}.{m[2]}.{m[3]}"] = value
        elif m := _HEAD.match(key):
            if m[1] in ("noise_std", "log_std"):
                out["std_param"] = value.reshape(-1)
        else:
            raise CheckpointError(f"ML2L actor weight {key!r} has no place in the PointNet actor",
                                  hint="the checkpoint is not of ML2L's Visuomotor(PointNet) actor")
    low, high = weights["head.lb"].float(), weights["head.ub"].float()
    out.update(action_low=low, action_high=high, scale=(high - low) / 2, offset=(high + low) / 2)
    return out


# -- checkpoint + config -> evaluation policy ---------------------------------------------------
def ml2l_env_and_processing(env_cfg: dict, path="config") -> tuple[dict, dict]:
    """(ms2flow EnvConfig dict, ObsProcessConfig dict in the ml2l layout) for an ML2L env_cfg."""
    from storage_schemas.dataset import ObsProcessConfig
    from storage_schemas.env import EnvConfig

    if not env_cfg.get("env_name"):
        raise ConfigError(f"ML2L config {path}: env_cfg has no env_name", hint="e.g. env_cfg.env_name=PickCube-v0")
    obs_mode = env_cfg.get("obs_mode", "pointcloud")  # a PointNet actor: point clouds unless the config says
    if obs_mode != "pointcloud":
        raise ConfigError(f"ML2L config {path}: env_cfg.obs_mode {obs_mode!r} does not fit a PointNet actor",
                          hint="set env_cfg.obs_mode=pointcloud")
    env = EnvConfig(env_id=env_cfg["env_name"], obs_mode="pointcloud",
                    control_mode=env_cfg.get("control_mode", ML2L_DEFAULT_CONTROL_MODE),
                    reward_mode=env_cfg.get("reward_mode", "dense"),
                    max_episode_steps=env_cfg.get("horizon") or env_cfg.get("max_episode_steps"))
    n_goal = int(env_cfg.get("n_goal_points", -1))
    processing = ObsProcessConfig(obs_mode="pointcloud", obs_layout="ml2l", obs_frame=env_cfg.get("obs_frame", "world"),
                                  n_points=int(env_cfg.get("n_points", 1200)), n_goal_points=max(n_goal, 0))
    return env.model_dump(mode="json"), processing.model_dump(mode="json")


def load_ml2l_policy(checkpoint: str | os.PathLike, config: str | os.PathLike,
                     options: list[str] | None = None) -> tuple[ML2LPointNetActor, dict[str, Any]]:
    """(actor with ``act``, a checkpoint view like ms2core.algos.policies.load_policy's) for an ML2L checkpoint."""
    cfg = read_ml2l_config(config)
    for option in options or []:
        set_option(cfg, option)
    actor_cfg = (cfg["agent_cfg"] or {}).get("actor_cfg") or {}
    actor = build_actor(actor_cfg, _actor_state(Path(checkpoint)), config)
    env, processing = ml2l_env_and_processing(cfg.get("env_cfg") or {}, config)
    view = {
        "config": {"env": env, "algo": f"ml2l-{str(cfg['agent_cfg'].get('type', '?')).lower()}"},
        "extra": {"algo": "ml2l", "obs_mode": "pointcloud", "obs_processing": processing, "dataset_manifest": None,
                  "action_dim": int(actor.action_low.numel()), "gym_env_id": None},
        # ML2L names checkpoints model_<steps>.ckpt
        "step": int(m[1]) if (m := re.search(r"model_(\d+)", Path(checkpoint).stem)) else 0,
    }
    return actor, view
