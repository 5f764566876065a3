"""Networks for every obs mode (MLP, PointNet, CNN), policy heads, ``build_policy`` (BC), and the online
algorithms' actors and critics (``ms2core.nn.actors``).

Encoders take the processed-observation dict (see ms2core.obs) and select their
keys; heads turn features into actions or action distributions.
"""

from ms2core.nn.encoders import CNNEncoder, MLP, PointNetEncoder, StateEncoder, make_mlp
from ms2core.nn.heads import (
    DeterministicHead,
    GaussianHead,
    TanhGaussianHead,
    gaussian_log_prob,
    tanh_gaussian_log_prob,
)
from ms2core.nn.policy import Policy, build_policy

__all__ = [
    "CNNEncoder", "DeterministicHead", "GaussianHead", "MLP", "PointNetEncoder", "Policy", "StateEncoder",
    "TanhGaussianHead", "build_policy", "gaussian_log_prob", "make_mlp", "tanh_gaussian_log_prob",
]
