import dataclasses
import json

import jax
import numpy as np
import pytest
from conftest import mappings_left_per_call, memory_map_count

from s2l_jax.data import Dataset, load_default, split
from s2l_jax.model import PRESETS, ClassifierConfig, SequenceClassifier
from s2l_jax.predictor import inference_layout
from s2l_jax.train import TrainConfig, classification_metrics, evaluate, make_steps, per_class_metrics, predict
from s2l_jax.trainer import TrainingDiverged, fit

QUIET = {"log": lambda s: None}


def tiny_text(n: int = 16, seed: int = 0) -> Dataset:
    """Variable-length token sequences whose label sits in the first token: only reachable through valid steps."""
    rng = np.random.default_rng(seed)
    lengths = rng.integers(2, 7, n).astype(np.int32)
    x = np.zeros((n, 6), np.int32)
    labels = np.arange(n, dtype=np.int32) % 2
    for i, k in enumerate(lengths):
        x[i, :k] = rng.integers(2, 10, k)
        x[i, 0] = 10 + labels[i]
    return Dataset(x, lengths, labels, ("a", "b"))


def tiny_cfg(pooling: str = "mean") -> ClassifierConfig:
    return ClassifierConfig(vocab_size=12, embedding_dim=8, hidden_size=16, num_classes=2, pooling=pooling,
                            bidirectional=pooling != "last", padding_idx=0)


FAST = TrainConfig(epochs=40, batch_size=8, learning_rate=1e-2, warmup_steps=2)


@pytest.mark.parametrize("pooling", ["last", "mean", "attention"])
def test_tiny_text_dataset_is_overfit_to_full_accuracy(pooling):
    data = tiny_text()
    result = fit(tiny_cfg(pooling), FAST, data, data, **QUIET)
    assert result.history[-1]["accuracy"] == 1.0


def test_bfloat16_compute_learns_and_keeps_float32_params_and_optimizer_state():
    data = tiny_text()
    result = fit(tiny_cfg(), dataclasses.replace(FAST, precision="bfloat16"), data, data, **QUIET)
    assert result.history[-1]["accuracy"] == 1.0
    assert {a.dtype for a in jax.tree.leaves(result.params)} == {np.dtype(np.float32)}


@pytest.mark.slow  # ~20 s; kill/resume and checkpoint tests compare whole runs bit for bit (without dropout)
def test_same_seed_twice_gives_bit_identical_params():
    data = tiny_text()
    cfg = TrainConfig(epochs=3, batch_size=4, learning_rate=1e-2, warmup_steps=2)
    a, b = (fit(tiny_cfg("attention").replace(dropout=0.3), cfg, data, data, **QUIET) for _ in range(2))
    for x, y in zip(jax.tree.leaves(a.params), jax.tree.leaves(b.params), strict=True):
        np.testing.assert_array_equal(x, y)


def test_multi_label_targets_train_with_sigmoid_bce_to_exact_match():
    base = tiny_text(24, seed=1)
    y = np.zeros((24, 3), np.float32)  # label 0 from the first token, label 2 from the length, label 1 never
    y[:, 0] = base.labels
    y[:, 2] = base.lengths >= 4
    data = Dataset(base.inputs, base.lengths, y, ("first", "never", "long"))
    cfg = tiny_cfg().replace(num_classes=3)
    result = fit(cfg, TrainConfig(epochs=60, batch_size=8, learning_rate=1e-2, warmup_steps=2), data, data, **QUIET)
    assert result.history[-1]["accuracy"] == 1.0


@pytest.mark.slow  # ~15 s: four fits
@pytest.mark.skipif(memory_map_count() == 0, reason="counts /proc/self/maps")
def test_repeated_fits_leave_no_compiled_executables_behind():
    """An eager model.init left ~65 memory mappings per fit in JAX's caches: a sweep of ~1000 fits in one process
    would reach vm.max_map_count and segfault."""
    data, one_epoch = tiny_text(), dataclasses.replace(FAST, epochs=1)
    assert mappings_left_per_call(lambda: fit(tiny_cfg(), one_epoch, data, data, **QUIET)) < 20


def test_macro_f1_matches_its_definition_on_a_hand_checked_case():
    pred, y = np.array([0, 0, 1, 2]), np.array([0, 1, 1, 1])
    m = classification_metrics(pred, y, 3)
    # class 0: P=1/2 R=1 F1=2/3; class 1: P=1 R=1/3 F1=1/2; class 2: F1=0
    assert m["accuracy"] == 0.5 and m["macro_f1"] == pytest.approx((2 / 3 + 1 / 2 + 0) / 3)


@pytest.mark.parametrize("multi_label", [False, True])
def test_metrics_match_scikit_learn(multi_label):
    from sklearn.metrics import accuracy_score, f1_score, precision_recall_fscore_support

    rng = np.random.default_rng(0)
    names = ("a", "b", "c", "d")  # "d" never occurs in labels or predictions
    if multi_label:
        y = (rng.random((50, 4)) < 0.4) * np.array([1, 1, 1, 0])
        pred = (rng.random((50, 4)) < 0.4) * np.array([1, 1, 1, 0])
    else:
        y, pred = rng.integers(0, 3, 50), rng.integers(0, 3, 50)
    m = classification_metrics(pred, y.astype(np.float32) if multi_label else y, 4)
    assert m["accuracy"] == pytest.approx(accuracy_score(y, pred))
    present = np.flatnonzero((y.sum(0) + pred.sum(0)) > 0) if multi_label else None  # scikit-learn counts "d" as 0
    assert m["macro_f1"] == pytest.approx(f1_score(y, pred, average="macro", labels=present, zero_division=0))
    per_class = per_class_metrics(pred, y.astype(np.float32) if multi_label else y, names)
    p, r, f, support = precision_recall_fscore_support(y, pred, labels=range(3), zero_division=0)
    for c, name in enumerate(names[:3]):
        got = per_class[name]
        assert (got["precision"], got["recall"], got["f1"]) == pytest.approx((p[c], r[c], f[c]))
        assert got["support"] == support[c]
    # "d" is in neither: nothing to measure (scikit-learn leaves it out of the labels it scores)
    assert per_class["d"] == {"precision": None, "recall": None, "f1": None, "support": 0}
    assert m["macro_f1"] == pytest.approx(np.mean([c["f1"] for c in per_class.values() if c["f1"] is not None]))


@pytest.mark.parametrize("batch", [2, 4], ids=["mid-epoch", "last-of-epoch"])
def test_nan_in_a_batch_stops_naming_step_and_rows_and_keeps_the_last_good_checkpoint(tmp_path, batch):
    # mid-epoch: the next step is already dispatched on the bad step's outputs when the loop reads it back
    from s2l_jax.checkpoint import latest_checkpoint, load_checkpoint
    from s2l_jax.data import epoch_plan

    rng = np.random.default_rng(0)
    x = rng.normal(size=(16, 5, 3)).astype(np.float32)
    data = Dataset(x, np.full(16, 5, np.int32), np.arange(16, dtype=np.int32) % 2, ("a", "b"))
    bad = int(epoch_plan(data, 4, seed=0, epoch=1)[batch - 1][0])  # a row of the epoch's batch `batch` (of 4)
    x[bad, 2, 1] = np.nan
    cfg = ClassifierConfig(vocab_size=None, input_size=3, hidden_size=4, num_classes=2, pooling="mean")
    tc = TrainConfig(epochs=2, batch_size=4, checkpoint_every=1, log_every=1)
    good = f"step_{batch - 1:08d}"
    with pytest.raises(TrainingDiverged, match=rf"not finite at step {batch} .*rows \[[^]]*\b{bad}\b.*{good}"):
        fit(cfg, tc, data, data, out=tmp_path, **QUIET)
    ckpt = latest_checkpoint(tmp_path / "checkpoints")
    assert ckpt.name == good
    params, _, state = load_checkpoint(ckpt, *_templates(cfg, tc, data))
    assert state["step"] == batch - 1 and all(np.isfinite(a).all() for a in jax.tree.leaves(params))
    logged = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in logged] == list(range(1, batch))


def _templates(cfg, tc, data):
    from s2l_jax.train import make_optimizer

    params = SequenceClassifier(cfg).init(jax.random.key(0), data.inputs[:1], lengths=data.lengths[:1])["params"]
    return params, make_optimizer(tc, 8).init(params)


def test_early_stopping_keeps_the_best_epoch_when_validation_gets_worse(tmp_path):
    data = tiny_text()
    flipped = Dataset(data.inputs, data.lengths, 1 - data.labels, data.label_names)  # learning train hurts valid
    cfg = TrainConfig(epochs=30, batch_size=8, learning_rate=1e-2, warmup_steps=2, patience=2)
    result = fit(tiny_cfg(), cfg, data, flipped, out=tmp_path, **QUIET)
    assert result.stopped_early and len(result.history) < 30
    losses = [h["valid_loss"] for h in result.history]
    assert result.best_epoch == int(np.argmin(losses)) + 1 and len(losses) - result.best_epoch == 2
    from s2l_jax.weights import load_weights

    saved, _ = load_weights(tmp_path / "model.safetensors")
    for a, b in zip(jax.tree.leaves(saved), jax.tree.leaves(result.best_params), strict=True):
        np.testing.assert_array_equal(a, b)


def test_trained_model_exported_to_torch_predicts_the_same_validation_labels():
    torch = pytest.importorskip("torch")
    import optax

    import parity

    train, valid = split(load_default())
    train = train.take(np.arange(256))
    cfg = PRESETS["attention"].replace(vocab_size=None, input_size=8, hidden_size=16, num_classes=10)
    tc = TrainConfig(epochs=6, batch_size=32, learning_rate=1e-2, warmup_steps=2)
    params = fit(cfg, tc, train, valid, **QUIET).params
    model = parity.to_torch({"params": params}, parity.TorchSequenceClassifier(cfg)).eval()
    with torch.no_grad():
        logits = model(torch.from_numpy(valid.inputs), torch.from_numpy(valid.lengths.astype(np.int64)))
    eval_step = make_steps(SequenceClassifier(cfg), optax.identity())[1]
    _, jax_pred, jax_probs = eval_step(params, valid.inputs, valid.lengths, valid.labels,
                                       np.ones(len(valid), np.float32))
    np.testing.assert_array_equal(logits.argmax(-1).numpy(), np.asarray(jax_pred))
    np.testing.assert_allclose(np.asarray(jax_probs), torch.softmax(logits, -1).numpy(), rtol=0, atol=1e-5)
    assert evaluate(eval_step, params, valid, 64)["accuracy"] > 0.3  # learned, so the agreement is not trivial


def test_predict_batches_rows_by_length_and_returns_them_in_dataset_order():
    import optax

    model = SequenceClassifier(tiny_cfg("attention"))
    data = tiny_text(37, seed=1)  # lengths 2-6: batched by length, the batches have different padded lengths
    params = model.init(jax.random.key(0), data.inputs[:1], lengths=data.lengths[:1])["params"]
    eval_step = make_steps(model, optax.identity())[1]
    whole_loss, whole_pred, whole_probs = eval_step(params, data.inputs, data.lengths, data.labels,
                                                    np.ones(len(data), np.float32))
    assert len(np.unique(np.asarray(whole_probs)[:, 0])) > len(data) // 2  # a wrong row order would show
    for batch_size in (4, None):
        loss, pred = predict(eval_step, params, data, batch_size)
        np.testing.assert_array_equal(pred, whole_pred)
        assert abs(loss - float(whole_loss)) < 1e-6
        _, pred, probs = predict(eval_step, params, data, batch_size, probabilities=True)
        np.testing.assert_array_equal(pred, whole_pred)
        np.testing.assert_allclose(probs, whole_probs, rtol=0, atol=1e-6)
    with pytest.raises(ValueError, match="batch size must be >= 1, got 0"):
        predict(eval_step, params, data, 0)


def test_evaluation_with_the_laid_out_lstm_weights_gives_the_same_loss_and_predictions():
    import optax

    model = SequenceClassifier(tiny_cfg("attention"))
    data = tiny_text(20)
    params = model.init(jax.random.key(3), data.inputs[:1], lengths=data.lengths[:1])["params"]
    eval_step = make_steps(model, optax.identity())[1]
    layout = inference_layout(model, params)
    assert layout["encoder"]  # the LSTM's weights are laid out, so the path under test is taken
    loss, pred = predict(eval_step, params, data, 8)
    loss_laid_out, pred_laid_out = predict(eval_step, params, data, 8, layout=layout)
    assert loss_laid_out == loss
    np.testing.assert_array_equal(pred_laid_out, pred)


def test_an_update_that_overflows_the_params_stops_before_they_are_taken(tmp_path):
    # The loss and gradients stay finite; AdamW's decay term, lr * wd * p, overflows float32.
    from s2l_jax.checkpoint import latest_checkpoint

    data = tiny_text()
    tc = TrainConfig(epochs=2, batch_size=8, learning_rate=1e38, weight_decay=100.0, warmup_steps=0,
                     schedule="constant", checkpoint_every=1)
    with pytest.raises(TrainingDiverged, match="the updated params are not finite at step 1 "):
        fit(tiny_cfg(), tc, data, data, out=tmp_path, **QUIET)
    assert latest_checkpoint(tmp_path / "checkpoints") is None


@pytest.mark.parametrize("change, message", [
    (lambda d: dataclasses.replace(d, labels=d.labels + 1), r"class ids \[2\] are outside \[0, 2\)"),
    (lambda d: dataclasses.replace(d, inputs=np.where(d.inputs == 11, 12, d.inputs)),
     r"token id 12 at row 1, step 0 is outside the vocabulary \[0, 12\) \(8 such ids\)"),
    (lambda d: dataclasses.replace(d, inputs=d.inputs[..., None].astype(np.float32)),
     r"inputs of shape \(16, 6, 1\)"),
    (lambda d: dataclasses.replace(d, labels=np.eye(4, dtype=np.float32)[d.labels]),
     r"4 label columns, but the model has num_classes=2"),
], ids=["class-ids", "token-ids", "input-kind", "label-columns"])
def test_data_the_model_cannot_read_is_refused_before_training(tmp_path, change, message):
    data = tiny_text()
    with pytest.raises(ValueError, match=f"training data: {message}"):
        fit(tiny_cfg(), FAST, change(data), data, out=tmp_path, **QUIET)
    with pytest.raises(ValueError, match=f"validation data: {message}"):
        fit(tiny_cfg(), FAST, data, change(data), out=tmp_path, **QUIET)
    assert not any(tmp_path.iterdir())


def test_numpy_integers_in_the_configs_are_saved_as_plain_numbers(tmp_path):
    data = tiny_text()
    cfg = tiny_cfg().replace(num_classes=data.labels.max() + 1, hidden_size=np.int64(8))
    assert cfg == tiny_cfg().replace(hidden_size=8) and type(cfg.num_classes) is int
    result = fit(cfg, dataclasses.replace(FAST, epochs=np.int32(1)), data, data, out=tmp_path, **QUIET)
    assert len(result.history) == 1 and json.loads((tmp_path / "meta.json").read_text())["train_config"]["epochs"] == 1


def test_patience_running_out_on_the_last_epoch_is_not_an_early_stop():
    data = tiny_text()
    flipped = Dataset(data.inputs, data.lengths, 1 - data.labels, data.label_names)
    logged = []
    cfg = TrainConfig(epochs=3, batch_size=8, learning_rate=1e-2, warmup_steps=2, patience=2)
    result = fit(tiny_cfg(), cfg, data, flipped, log=logged.append)
    assert result.best_epoch == 1 and len(result.history) == 3
    assert not result.stopped_early and not any("early stop" in s for s in logged)


def test_resuming_a_run_whose_checkpoints_are_gone_refuses_to_overwrite_its_model(tmp_path):
    import shutil

    data = tiny_text()
    fit(tiny_cfg(), dataclasses.replace(FAST, epochs=1), data, data, out=tmp_path, **QUIET)
    shutil.rmtree(tmp_path / "checkpoints")
    before = (tmp_path / "model.safetensors").read_bytes()
    with pytest.raises(ValueError, match="holds a model but no checkpoint to resume from"):
        fit(tiny_cfg(), dataclasses.replace(FAST, epochs=1), data, data, out=tmp_path, resume=True, **QUIET)
    assert (tmp_path / "model.safetensors").read_bytes() == before


def test_a_nan_validation_loss_stops_the_run_instead_of_freezing_the_best_model(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(8, 4, 3)).astype(np.float32)
    data = Dataset(x, np.full(8, 4, np.int32), np.arange(8, dtype=np.int32) % 2, ("a", "b"))
    bad = Dataset(np.where(np.arange(4)[None, :, None] == 2, np.nan, x), data.lengths, data.labels, data.label_names)
    cfg = ClassifierConfig(vocab_size=None, input_size=3, hidden_size=4, num_classes=2, pooling="mean")
    with pytest.raises(TrainingDiverged, match=r"validation loss nan after epoch 1 \(step 2\)"):
        fit(cfg, TrainConfig(epochs=3, batch_size=4), data, bad, out=tmp_path, **QUIET)
    assert not (tmp_path / "model.safetensors").exists()


def test_only_the_first_process_of_a_multi_host_run_writes_the_run_directory(tmp_path, monkeypatch):
    data, cfg = tiny_text(), TrainConfig(epochs=2, batch_size=8, checkpoint_every=1)
    first = fit(tiny_cfg(), cfg, data, data, out=tmp_path / "p0", **QUIET)
    monkeypatch.setattr(jax, "process_index", lambda: 1)  # what a second host's process reports
    other = fit(tiny_cfg(), cfg, data, data, out=tmp_path / "p1", **QUIET)
    assert sorted(p.name for p in (tmp_path / "p0").iterdir()) == [
        "checkpoints", "curves.png", "meta.json", "metrics.jsonl", "model.safetensors"]
    assert not (tmp_path / "p1").exists() or not any((tmp_path / "p1").iterdir())
    assert other.history[-1]["valid_loss"] == first.history[-1]["valid_loss"]  # it trained all the same


def test_fine_tuning_starts_from_converted_torch_weights_and_refuses_mismatched_ones():
    torch = pytest.importorskip("torch")
    import parity

    data = tiny_text()
    torch.manual_seed(0)
    tm = parity.TorchSequenceClassifier(tiny_cfg())
    _, variables = parity.from_torch(tm, pooling="mean")
    start = variables["params"]
    still = TrainConfig(epochs=1, batch_size=16, learning_rate=1e-12, weight_decay=0.0, warmup_steps=0)
    tuned = fit(tiny_cfg(), still, data, data, init_params=start, **QUIET).params  # one step of ~1e-12
    scratch = fit(tiny_cfg(), still, data, data, **QUIET).params
    for a, b, c in zip(jax.tree.leaves(tuned), jax.tree.leaves(start), jax.tree.leaves(scratch), strict=True):
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-9)
        assert np.abs(np.asarray(c) - np.asarray(b)).max() > 1e-2  # not the random init by chance
    learned = fit(tiny_cfg(), FAST, data, data, init_params=start, **QUIET)
    assert learned.history[-1]["accuracy"] == 1.0
    bad = jax.tree.map(np.asarray, start)
    bad["fc"]["weight"] = bad["fc"]["weight"][:, :-1]
    with pytest.raises(ValueError, match=r"key 'fc.weight' has shape \(2, 31\), expected \(2, 32\)"):
        fit(tiny_cfg(), still, data, data, init_params=bad, **QUIET)
    bad["fc"]["weight"] = np.full((2, 32), np.nan, np.float32)
    with pytest.raises(ValueError, match="tensor 'fc.weight' contains NaN or Inf"):
        fit(tiny_cfg(), still, data, data, init_params=bad, **QUIET)
    bad["fc"]["weight"] = np.zeros((2, 32), np.float64)
    with pytest.raises(ValueError, match="'fc.weight' is float64, the model float32"):
        fit(tiny_cfg(), still, data, data, init_params=bad, **QUIET)


@pytest.mark.parametrize("weights", [(0.3, 2.5), (0.01, 0.02)])  # the second: a batch's weights sum below 1
def test_class_weights_give_torch_weighted_cross_entropy_gradients(weights):
    torch = pytest.importorskip("torch")
    import optax

    import parity

    data, cfg = tiny_text(12, seed=3), tiny_cfg("attention")
    model = SequenceClassifier(cfg)
    params = model.init(jax.random.key(0), data.inputs[:1], lengths=data.lengths[:1])["params"]
    train_step = make_steps(model, optax.sgd(1.0), class_weights=weights)[0]  # new params = params - gradient
    new_params, _, loss, _ = train_step(params, optax.sgd(1.0).init(params), 0, data.inputs, data.lengths,
                                        data.labels, np.ones(len(data), np.float32))
    tm = parity.to_torch({"params": params}, parity.TorchSequenceClassifier(cfg))
    logits = tm(torch.from_numpy(data.inputs).long(), torch.from_numpy(data.lengths).long())
    torch_loss = torch.nn.functional.cross_entropy(logits, torch.from_numpy(data.labels).long(),
                                                   weight=torch.tensor(weights))
    torch_loss.backward()
    assert abs(float(loss) - torch_loss.item()) < 1e-6
    grads = parity.to_torch({"params": jax.tree.map(lambda a, b: a - b, params, new_params)})
    for name, p in tm.named_parameters():
        np.testing.assert_allclose(grads[name].numpy(), p.grad.numpy(), rtol=0, atol=1e-5, err_msg=name)


def test_validation_loss_with_class_weights_is_torchs_weighted_cross_entropy_over_the_whole_set():
    """Early stopping and the best model follow the validation loss: with class weights it must be the loss the
    run minimises, torch's CrossEntropyLoss(weight=w) over all rows (sum w_y * nll / sum w_y), not per batch."""
    torch = pytest.importorskip("torch")
    import parity

    train, valid, cfg, weights = tiny_text(16), tiny_text(37, seed=5), tiny_cfg("attention"), (0.2, 3.0)
    tc = dataclasses.replace(FAST, epochs=1, class_weights=weights)  # batches of 8: five, of unequal weight
    result = fit(cfg, tc, train, valid, **QUIET)
    tm = parity.to_torch({"params": result.params}, parity.TorchSequenceClassifier(cfg))
    with torch.no_grad():
        logits = tm(torch.from_numpy(valid.inputs).long(), torch.from_numpy(valid.lengths).long())
        expected = torch.nn.functional.cross_entropy(logits, torch.from_numpy(valid.labels).long(),
                                                     weight=torch.tensor(weights)).item()
        unweighted = torch.nn.functional.cross_entropy(logits, torch.from_numpy(valid.labels).long()).item()
    assert abs(expected - unweighted) > 1e-3  # the weights matter here, so the check can fail
    assert result.history[-1]["valid_loss"] == pytest.approx(expected, rel=0, abs=1e-6)


@pytest.mark.parametrize("weights, multi_label, message", [
    ((1.0, 0.0), False, r"class_weights must be finite and > 0, got \[1.0, 0.0\]"),
    ((1.0, 2.0, 3.0), False, "class_weights has 3 weights for 2 classes"),
    ((1.0, 2.0), True, "class_weights apply to single-label data"),
])
def test_class_weights_that_do_not_fit_the_data_are_refused(weights, multi_label, message):
    data = tiny_text()
    if multi_label:
        data = Dataset(data.inputs, data.lengths, np.eye(2, dtype=np.float32)[data.labels], data.label_names)
    with pytest.raises(ValueError, match=message):
        fit(tiny_cfg(), dataclasses.replace(FAST, epochs=1, class_weights=weights), data, data, **QUIET)


def test_frozen_embedding_trains_as_torch_with_requires_grad_off():
    """Frozen params get no update and stay out of the clipping norm, as torch's requires_grad=False does."""
    torch = pytest.importorskip("torch")
    import parity
    from s2l_jax.train import make_optimizer

    data, cfg = tiny_text(16, seed=4), tiny_cfg("attention")
    model = SequenceClassifier(cfg)
    params = model.init(jax.random.key(0), data.inputs[:1], lengths=data.lengths[:1])["params"]
    tc = TrainConfig(learning_rate=1e-2, weight_decay=0.1, clip_norm=0.05, warmup_steps=0, schedule="constant",
                     freeze=("embedding",))
    tx = make_optimizer(tc, 3)
    train_step = make_steps(model, tx)[0]
    tm = parity.to_torch({"params": params}, parity.TorchSequenceClassifier(cfg))
    tm.embedding.weight.requires_grad_(False)
    trained = [p for p in tm.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(trained, lr=1e-2, weight_decay=0.1)
    x, lengths, y = (torch.from_numpy(a).long() for a in (data.inputs, data.lengths, data.labels))
    state, new = tx.init(params), params
    for step in range(3):
        new, state, _, _ = train_step(new, state, step, data.inputs, data.lengths, data.labels,
                                      np.ones(len(data), np.float32))
        opt.zero_grad()
        torch.nn.functional.cross_entropy(tm(x, lengths), y).backward()
        assert torch.nn.utils.clip_grad_norm_(trained, 0.05) > 0.05  # the clip is at work
        opt.step()
    np.testing.assert_array_equal(new["embedding"]["weight"], params["embedding"]["weight"])
    ours = parity.to_torch({"params": new})
    for name, p in tm.state_dict().items():
        np.testing.assert_allclose(ours[name].numpy(), p.numpy(), rtol=0, atol=1e-5, err_msg=name)
    with pytest.raises(ValueError, match=r"freeze names \['embeddings'\]: this model's parts are \['attention', "):
        fit(cfg, dataclasses.replace(FAST, freeze=("embeddings",)), data, data, **QUIET)
