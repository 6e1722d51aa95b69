"""parity: torch reference models, torch <-> s2l_jax weight conversion, weight files, parity checks.

Names load on first use (PEP 562), so importing `parity.pytest_plugin` (every pytest run, via the entry point)
does not import torch or JAX."""

import importlib

_EXPORTS = {
    "parity.check": ["ParityError", "assert_parity", "compare"],
    "parity.convert": ["discover", "from_torch", "to_torch"],
    "parity.infer": ["Architecture", "infer_architecture"],
    "parity.io": ["convert_file", "load_classifier_file", "read_state_dict", "write_state_dict"],
    "parity.report": ["ParityReport", "TensorDiff"],
    "parity.tolerance": ["POLICY", "Tolerance", "parity_precision", "tolerance_for"],
    "parity.torch_models": ["SEED_MODELS", "TorchSequenceClassifier", "run_recurrent", "torch_recurrent"],
    "parity.trajectory": ["OptimizerSpec", "compare_training", "random_batches", "step_drift"],
}
_MODULE_OF = {name: module for module, names in _EXPORTS.items() for name in names}
__all__ = sorted(_MODULE_OF)


def __getattr__(name: str):
    if name in _MODULE_OF:
        return getattr(importlib.import_module(_MODULE_OF[name]), name)
    raise AttributeError(f"module 'parity' has no attribute {name!r}")


def __dir__():
    return __all__
