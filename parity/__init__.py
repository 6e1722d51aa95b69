"""parity: torch reference models, torch <-> s2l_jax weight conversion, parity checks."""

from parity.check import ParityError, assert_parity, compare
from parity.convert import discover, from_torch, to_torch
from parity.infer import Architecture, infer_architecture
from parity.io import convert_file, load_classifier_file, read_state_dict, write_state_dict
from parity.report import ParityReport, TensorDiff
from parity.tolerance import POLICY, Tolerance, parity_precision, tolerance_for
from parity.torch_models import SEED_MODELS, TorchSequenceClassifier, run_recurrent, torch_recurrent
from parity.trajectory import OptimizerSpec, compare_training, random_batches, step_drift

__all__ = ["POLICY", "SEED_MODELS", "Architecture", "OptimizerSpec", "ParityError", "ParityReport", "TensorDiff",
           "Tolerance", "TorchSequenceClassifier", "assert_parity", "compare", "compare_training", "convert_file",
           "discover", "from_torch", "infer_architecture", "load_classifier_file", "parity_precision",
           "random_batches", "read_state_dict", "run_recurrent", "step_drift", "to_torch", "tolerance_for",
           "torch_recurrent", "write_state_dict"]
