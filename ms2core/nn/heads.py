"""Policy heads: features -> action (deterministic, for BC) or a distribution (Gaussian, tanh-Gaussian),
and the distribution maths every algorithm uses (defined here once).

The log-probs of the Gaussian and the tanh-Gaussian (the change-of-variables term in its numerically
stable form) are pure functions, checked against hand-computed numbers.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

LOG_STD_MIN, LOG_STD_MAX = -20.0, 2.0


@dataclass
class ActionDist:
    """A diagonal Gaussian (optionally squashed by tanh)."""

    mean: torch.Tensor
    log_std: torch.Tensor
    squashed: bool

    def mode(self) -> torch.Tensor:
        return torch.tanh(self.mean) if self.squashed else self.mean

    def sample(self, generator: torch.Generator | None = None) -> torch.Tensor:
        noise = torch.randn(self.mean.shape, generator=generator, device=self.mean.device, dtype=self.mean.dtype)
        pre = self.mean + noise * self.log_std.exp()
        return torch.tanh(pre) if self.squashed else pre

    def rsample_with_log_prob(self) -> tuple[torch.Tensor, torch.Tensor]:
        pre = self.mean + torch.randn_like(self.mean) * self.log_std.exp()
        if self.squashed:
            return torch.tanh(pre), tanh_gaussian_log_prob(pre, self.mean, self.log_std)
        return pre, gaussian_log_prob(pre, self.mean, self.log_std)

    def log_prob(self, action: torch.Tensor) -> torch.Tensor:
        if self.squashed:
            pre = atanh_clamped(action)
            return tanh_gaussian_log_prob(pre, self.mean, self.log_std)
        return gaussian_log_prob(action, self.mean, self.log_std)


def gaussian_log_prob(x: torch.Tensor, mean: torch.Tensor, log_std: torch.Tensor) -> torch.Tensor:
    """log N(x; mean, exp(log_std)^2) summed over the last (action) dimension."""
    z = (x - mean) * torch.exp(-log_std)
    return (-0.5 * z.pow(2) - log_std - 0.5 * math.log(2 * math.pi)).sum(-1)


def gaussian_entropy(log_std: torch.Tensor) -> torch.Tensor:
    return (log_std + 0.5 * math.log(2 * math.pi * math.e)).sum(-1)


def log_one_minus_tanh_sq(u: torch.Tensor) -> torch.Tensor:
    """log(1 - tanh(u)^2) = 2 (log 2 - u - softplus(-2u)), finite even where tanh(u) rounds to +-1."""
    return 2.0 * (math.log(2.0) - u - nn.functional.softplus(-2.0 * u))


def tanh_gaussian_log_prob(u: torch.Tensor, mean: torch.Tensor, log_std: torch.Tensor) -> torch.Tensor:
    """log pi(a) for a = tanh(u), u ~ N(mean, std): the Gaussian term minus the Jacobian log|da/du|."""
    return gaussian_log_prob(u, mean, log_std) - log_one_minus_tanh_sq(u).sum(-1)


def atanh_clamped(a: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """Pre-tanh value of an action in [-1, 1] (demo actions on the bound would be infinite)."""
    return torch.atanh(a.clamp(-1.0 + eps, 1.0 - eps))


class DeterministicHead(nn.Module):
    def __init__(self, in_dim: int, action_dim: int):
        super().__init__()
        self.linear = nn.Linear(in_dim, action_dim)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.linear(features)


class GaussianHead(nn.Module):
    """Mean from the features, state-independent log-std parameter."""

    squashed = False

    def __init__(self, in_dim: int, action_dim: int, log_std_init: float = -0.5):
        super().__init__()
        self.mean = nn.Linear(in_dim, action_dim)
        self.log_std = nn.Parameter(torch.full((action_dim,), float(log_std_init)))

    def forward(self, features: torch.Tensor) -> ActionDist:
        mean = self.mean(features)
        log_std = self.log_std.clamp(LOG_STD_MIN, LOG_STD_MAX).expand_as(mean)
        return ActionDist(mean, log_std, self.squashed)


class TanhGaussianHead(nn.Module):
    """SAC-style: mean and log-std from the features, action = tanh(sample)."""

    squashed = True

    def __init__(self, in_dim: int, action_dim: int, log_std_init: float = -0.5):
        super().__init__()
        self.linear = nn.Linear(in_dim, 2 * action_dim)

    def forward(self, features: torch.Tensor) -> ActionDist:
        mean, log_std = self.linear(features).chunk(2, dim=-1)
        return ActionDist(mean, log_std.clamp(LOG_STD_MIN, LOG_STD_MAX), True)
