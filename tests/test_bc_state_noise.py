"""State-noise augmentation for BC: perturbs only obs['state'], scaled by the dataset's per-dimension std."""

from __future__ import annotations

import pytest
import torch

from ms2core.algos.bc import perturb_state
from ms2core.config import load_config
from ms2core.data import DemoBatch
from ms2core.errors import ConfigError
from storage_schemas.training import BCConfig


def _batch(n: int = 20000) -> DemoBatch:
    return DemoBatch(obs={"state": torch.zeros(n, 3), "xyz": torch.ones(n, 4, 3)}, actions=torch.ones(n, 7))


def test_noise_is_scaled_per_dimension_and_touches_only_the_state():
    torch.manual_seed(0)
    std = torch.tensor([1.0, 0.1, 10.0])
    noisy = perturb_state(_batch(), std, 0.5)
    measured = noisy.obs["state"].std(0)
    assert torch.allclose(measured, 0.5 * std, rtol=0.05)
    assert torch.equal(noisy.obs["xyz"], _batch().obs["xyz"]) and torch.equal(noisy.actions, _batch().actions)


def test_zero_noise_is_the_identity_and_negative_is_rejected():
    batch = _batch(10)
    assert perturb_state(batch, torch.ones(3), 0.0) is batch
    with pytest.raises(ConfigError, match="state_noise_std"):
        load_config(BCConfig, None, ["train.state_noise_std=-0.1"])
