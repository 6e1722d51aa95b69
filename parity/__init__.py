"""parity: torch reference models, torch <-> s2l_jax weight conversion, parity checks."""

from parity.convert import discover, from_torch, to_torch
from parity.torch_models import SEED_MODELS, TorchSequenceClassifier, run_recurrent, torch_recurrent

__all__ = ["SEED_MODELS", "TorchSequenceClassifier", "discover", "from_torch", "run_recurrent", "to_torch",
           "torch_recurrent"]
