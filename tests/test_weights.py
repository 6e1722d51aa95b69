"""Weight files: JAX -> safetensors -> torch (strict) and back, bit-exact; damaged files give clear errors."""

import numpy as np
import pytest
import torch
from safetensors.torch import load_file as torch_load_file
from safetensors.torch import save_file as torch_save_file

from parity import TorchSequenceClassifier, from_torch
from s2l_jax import ClassifierConfig
from s2l_jax.params import flatten
from s2l_jax.weights import load_classifier, save_weights

CONFIG = ClassifierConfig(vocab_size=11, embedding_dim=3, hidden_size=4, num_classes=2, bidirectional=True,
                          pooling="attention", num_layers=2)


def test_safetensors_round_trip_through_torch_is_bit_exact(tmp_path):
    tm = TorchSequenceClassifier(CONFIG)
    torch_save_file(tm.state_dict(), tmp_path / "torch.safetensors")
    model, variables = load_classifier(tmp_path / "torch.safetensors", CONFIG)
    save_weights(tmp_path / "jax.safetensors", variables, CONFIG)
    back = TorchSequenceClassifier(CONFIG)
    back.load_state_dict(torch_load_file(tmp_path / "jax.safetensors"), strict=True)
    for k, v in tm.state_dict().items():
        assert torch.equal(v, back.state_dict()[k]), k
    model2, variables2 = load_classifier(tmp_path / "jax.safetensors")  # config travels in the metadata
    assert model2.config == CONFIG
    for k, v in flatten(variables2["params"]).items():
        np.testing.assert_array_equal(v, flatten(from_torch(tm)[1]["params"])[k])


def test_damaged_files_give_clear_errors(tmp_path):
    tm = TorchSequenceClassifier(CONFIG)
    path = tmp_path / "w.safetensors"
    torch_save_file(tm.state_dict(), path)
    data = path.read_bytes()
    (tmp_path / "truncated.safetensors").write_bytes(data[: len(data) // 2])
    (tmp_path / "garbage.safetensors").write_bytes(b"\x00" * 64)
    for name in ("truncated", "garbage"):
        with pytest.raises(ValueError, match="not a readable safetensors file"):
            load_classifier(tmp_path / f"{name}.safetensors", CONFIG)
    with pytest.raises(FileNotFoundError, match="no such weight file"):
        load_classifier(tmp_path / "absent.safetensors", CONFIG)
    with pytest.raises(ValueError, match="holds no s2l config"):
        load_classifier(path)
    with pytest.raises(ValueError, match=r"key 'fc.weight' has shape \(2, 8\), expected \(2, 4\)"):
        load_classifier(path, CONFIG.replace(pooling="last"))
