"""The trained policy as an MLflow pyfunc model: processed observations in, deterministic actions (env units) out.

    model = mlflow.pyfunc.load_model("models:/ms2-PickCube-v0-bc@champion")
    actions = model.predict({"state": states})          # (B, S) -> (B, A)
"""

from __future__ import annotations

import mlflow.pyfunc
import numpy as np


class Ms2Policy(mlflow.pyfunc.PythonModel):
    def load_context(self, context) -> None:
        from ms2core.algos.policies import load_policy  # BC and online RL (ppo/dapg/sac/gail)

        self.policy, ckpt = load_policy(context.artifacts["checkpoint"], "cpu")
        self.obs_keys = sorted(ckpt["extra"]["obs_shapes"])

    def predict(self, context, model_input, params=None):
        import torch

        if hasattr(model_input, "to_dict") and not isinstance(model_input, dict):  # a pandas frame of one row
            model_input = {k: np.stack(v.to_numpy()) for k, v in model_input.items()}
        missing = [k for k in self.obs_keys if k not in model_input]
        if missing:
            raise ValueError(f"observation lacks keys {missing}; the policy needs {self.obs_keys}")
        obs = {k: torch.as_tensor(np.asarray(model_input[k])) for k in self.obs_keys}
        with torch.no_grad():
            return self.policy.act(obs, "mean").float().numpy()


def log_policy_model(checkpoint: str, name: str = "policy"):
    """Log ``checkpoint`` as a pyfunc model in the active MLflow run; returns mlflow's ModelInfo."""
    import mlflow

    return mlflow.pyfunc.log_model(
        name=name, python_model=Ms2Policy(), artifacts={"checkpoint": checkpoint},
        # The environment is ms2flow's own; don't let MLflow probe pip/conda offline.
        pip_requirements=["ms2flow", "torch", "numpy"],
    )
