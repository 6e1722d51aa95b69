import json
import re
import shutil

import jax
import numpy as np
import pytest
from safetensors.numpy import save_file
from test_train import QUIET, tiny_cfg, tiny_text

from s2l_jax.checkpoint import latest_checkpoint, list_checkpoints, save_checkpoint
from s2l_jax.params import flatten
from s2l_jax.run_dir import read_meta_of_checkpoint
from s2l_jax.train import TrainConfig
from s2l_jax.trainer import fit
from s2l_jax.weights import load_weights, read_safetensors

CFG = TrainConfig(epochs=3, batch_size=4, learning_rate=1e-2, warmup_steps=2, checkpoint_every=3, keep_checkpoints=20)


def final_arrays(run_dir) -> dict:
    return read_safetensors(latest_checkpoint(run_dir / "checkpoints") / "arrays.safetensors")[0]


def test_resuming_from_any_checkpoint_ends_bit_identical_to_the_uninterrupted_run(tmp_path):
    data = tiny_text()
    model_cfg = tiny_cfg("attention").replace(dropout=0.2)  # dropout: the resumed run must draw the same masks
    full = fit(model_cfg, CFG, data, data, out=tmp_path / "full", **QUIET)
    assert [c.name for c in list_checkpoints(tmp_path / "full" / "checkpoints")] == [
        f"step_{s:08d}" for s in (3, 4, 6, 8, 9, 12)]
    a = final_arrays(tmp_path / "full")
    for step in (3, 4, 9):  # mid-epoch (3, 9) and an epoch boundary (4 batches per epoch)
        part = tmp_path / f"from_{step}"
        (part / "checkpoints").mkdir(parents=True)
        name = f"checkpoints/step_{step:08d}"
        shutil.copytree(tmp_path / "full" / name, part / name)
        resumed = fit(model_cfg, CFG, data, data, out=part, resume=True, **QUIET)
        b = final_arrays(part)
        assert a.keys() == b.keys() and any(k.startswith("opt.") for k in a)
        for k in a:
            np.testing.assert_array_equal(a[k], b[k], err_msg=f"{k} resumed from step {step}")
        assert resumed.history == [{**h, "seconds": r["seconds"]} for h, r in zip(full.history, resumed.history,
                                                                                    strict=True)]


def test_a_second_run_into_the_same_directory_is_refused_without_resume(tmp_path):
    data = tiny_text()
    fit(tiny_cfg(), TrainConfig(epochs=1, batch_size=8), data, data, out=tmp_path, **QUIET)
    before = (tmp_path / "model.safetensors").read_bytes()
    with pytest.raises(ValueError, match="already holds a training run; pass --resume"):
        fit(tiny_cfg(), TrainConfig(epochs=1, batch_size=8), data, data, out=tmp_path, **QUIET)
    assert (tmp_path / "model.safetensors").read_bytes() == before


def test_resuming_with_another_config_names_the_differing_fields(tmp_path):
    data = tiny_text()
    fit(tiny_cfg(), TrainConfig(epochs=1, batch_size=8), data, data, out=tmp_path, **QUIET)
    with pytest.raises(ValueError, match=r"incompatible config: hidden_size=16 \(flags/config say 32\)"):
        fit(tiny_cfg().replace(hidden_size=32), TrainConfig(epochs=1, batch_size=8), data, data, out=tmp_path,
            resume=True, **QUIET)
    with pytest.raises(ValueError, match=r"incompatible config: batch_size=8 \(flags/config say 4\)"):
        fit(tiny_cfg(), TrainConfig(epochs=1, batch_size=4), data, data, out=tmp_path, resume=True, **QUIET)


def test_a_crash_while_writing_leaves_no_partial_checkpoint_under_a_step_name(tmp_path, monkeypatch):
    params = {"w": jax.numpy.ones((2, 3))}
    save_checkpoint(tmp_path, 1, params, (), {"x": 1})

    def crash(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr("s2l_jax.checkpoint.save_file", crash)
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint(tmp_path, 2, params, (), {"x": 2})
    assert [p.name for p in tmp_path.iterdir()] == ["step_00000001"]
    assert latest_checkpoint(tmp_path).name == "step_00000001"


def test_a_crash_while_pruning_leaves_every_step_named_checkpoint_whole(tmp_path, monkeypatch):
    """Deleting an old checkpoint file by file and dying half-way must not leave `step_N` without its arrays."""
    params = {"w": jax.numpy.ones((2, 3))}
    save_checkpoint(tmp_path, 1, params, (), {"x": 1}, keep=1)

    def die_half_way(path, *args, **kwargs):
        next(path.rglob("arrays.safetensors")).unlink()
        raise KeyboardInterrupt("killed")

    monkeypatch.setattr("s2l_jax.checkpoint.shutil.rmtree", die_half_way)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(tmp_path, 2, params, (), {"x": 2}, keep=1)
    monkeypatch.undo()
    for ckpt in list_checkpoints(tmp_path):
        read_safetensors(ckpt / "arrays.safetensors")
    assert latest_checkpoint(tmp_path).name == "step_00000002"
    save_checkpoint(tmp_path, 3, params, (), {"x": 3}, keep=1)  # the next save sweeps what the crash left
    assert [p.name for p in tmp_path.iterdir()] == ["step_00000003"]


def test_resuming_on_other_training_or_validation_data_is_refused(tmp_path):
    """Another dataset changes the batches, the schedule's length and the best-model choice: the resumed run
    would silently be neither the old run nor a new one."""
    data = tiny_text()
    cfg = TrainConfig(epochs=2, batch_size=8)
    fit(tiny_cfg(), cfg, data, data, out=tmp_path, **QUIET)
    with pytest.raises(ValueError, match=r"training data differs from the checkpoint's \(16 rows"):
        fit(tiny_cfg(), cfg, tiny_text(seed=1), data, out=tmp_path, resume=True, **QUIET)
    with pytest.raises(ValueError, match=r"training data differs from the checkpoint's \(16 rows, now 20"):
        fit(tiny_cfg(), cfg, tiny_text(20), data, out=tmp_path, resume=True, **QUIET)
    with pytest.raises(ValueError, match=r"validation data differs from the checkpoint's"):
        fit(tiny_cfg(), cfg, data, tiny_text(seed=1), out=tmp_path, resume=True, **QUIET)
    resumed = fit(tiny_cfg(), cfg, data, data, out=tmp_path, resume=True, **QUIET)  # the same data: accepted
    assert len(resumed.history) == 2


def test_a_corrupt_checkpoint_state_file_is_an_error_naming_it(tmp_path):
    data = tiny_text()
    fit(tiny_cfg(), TrainConfig(epochs=1, batch_size=8), data, data, out=tmp_path, **QUIET)
    state = latest_checkpoint(tmp_path / "checkpoints") / "state.json"
    state.write_text(state.read_text()[:40])
    named = re.escape(str(state))
    with pytest.raises(ValueError, match=rf"{named} is not a readable checkpoint state \(truncated or corrupt\?\)"):
        read_meta_of_checkpoint(state.parent)  # what `s2l train --resume` reads first
    with pytest.raises(ValueError, match=rf"{named} is not a readable checkpoint state"):
        fit(tiny_cfg(), TrainConfig(epochs=1, batch_size=8), data, data, out=tmp_path, resume=True, **QUIET)
    state.write_text("[1, 2]")
    with pytest.raises(ValueError, match=rf"{named} is not a readable checkpoint state"):
        fit(tiny_cfg(), TrainConfig(epochs=1, batch_size=8), data, data, out=tmp_path, resume=True, **QUIET)
    state.write_text(json.dumps({"step": 3, "meta": {}}))  # another program's, or an older format
    with pytest.raises(ValueError, match=rf"{named} is not an s2l_jax training checkpoint: it lacks model_config, "
                                         "train_config, epoch"):
        fit(tiny_cfg(), TrainConfig(epochs=1, batch_size=8), data, data, out=tmp_path, resume=True, **QUIET)


@pytest.mark.slow  # ~15 s; resuming itself is checked bit for bit by the tests above
def test_resuming_without_the_best_model_file_keeps_the_best_of_the_remaining_epochs(tmp_path):
    data, cfg = tiny_text(), CFG
    fit(tiny_cfg(), cfg, data, data, out=tmp_path, **QUIET)
    for later in list_checkpoints(tmp_path / "checkpoints")[2:]:
        shutil.rmtree(later)  # back to step 4, the end of epoch 1
    state = latest_checkpoint(tmp_path / "checkpoints") / "state.json"
    state.write_text(json.dumps({**json.loads(state.read_text()), "best_loss": -1.0}))  # no later epoch beats it
    (tmp_path / "model.safetensors").unlink()
    lines = []
    resumed = fit(tiny_cfg(), cfg, data, data, out=tmp_path, resume=True, **{**QUIET, "log": lines.append})
    assert any("model.safetensors (the best model of epochs before 2) is missing" in line for line in lines)
    assert resumed.best_epoch >= 2 and (tmp_path / "model.safetensors").is_file()
    saved = load_weights(tmp_path / "model.safetensors")[0]
    assert flatten(saved).keys() == flatten(resumed.best_params).keys()
    for k, v in flatten(saved).items():
        np.testing.assert_array_equal(v, flatten(resumed.best_params)[k])


@pytest.mark.parametrize("change,message", [
    (lambda a: a.astype(np.float64), r"'fc.bias' is float64, the run's is float32 \(float64 runs need jax_enable_x64"),
    (lambda a: np.full_like(a, np.nan), r"tensor 'fc.bias' contains NaN or Inf \(2 of 2 values\)"),
])
def test_a_checkpoint_with_other_dtypes_or_nan_weights_is_refused_naming_the_tensor(tmp_path, change, message):
    data = tiny_text()
    fit(tiny_cfg(), TrainConfig(epochs=1, batch_size=8), data, data, out=tmp_path, **QUIET)
    arrays = latest_checkpoint(tmp_path / "checkpoints") / "arrays.safetensors"
    tensors = read_safetensors(arrays)[0]
    save_file({**tensors, "params.fc.bias": change(tensors["params.fc.bias"])}, arrays)
    with pytest.raises(ValueError, match=message):
        fit(tiny_cfg(), TrainConfig(epochs=1, batch_size=8), data, data, out=tmp_path, resume=True, **QUIET)


def test_resuming_on_another_device_count_says_the_run_is_no_longer_bit_identical(tmp_path):
    data = tiny_text()
    fit(tiny_cfg(), CFG, data, data, out=tmp_path, **QUIET)
    for later in list_checkpoints(tmp_path / "checkpoints")[1:]:
        shutil.rmtree(later)
    state = latest_checkpoint(tmp_path / "checkpoints") / "state.json"
    assert json.loads(state.read_text())["devices"] == 1
    state.write_text(json.dumps({**json.loads(state.read_text()), "devices": 2}))  # as a 2-device run writes it
    lines = []
    fit(tiny_cfg(), CFG, data, data, out=tmp_path, resume=True, **{**QUIET, "log": lines.append})
    assert any("written on 2 device(s), this run has 1: it continues, but not bit-identical" in line
               for line in lines)
