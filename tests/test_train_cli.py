import io
import json

import jax
import numpy as np
import pytest

from s2l_jax.cli import main


def stdin(data: bytes) -> io.TextIOWrapper:
    """A stand-in for sys.stdin: `s2l predict` reads its bytes."""
    return io.TextIOWrapper(io.BytesIO(data))


def test_train_on_text_csv_saves_model_and_meta(tmp_path):
    f = tmp_path / "d.csv"
    f.write_text("text,label\n" + "".join(f"good fine {i},pos\nbad awful {i},neg\n" for i in range(10)))
    assert main(["train", "--data", str(f), "--epochs", "2", "--batch-size", "8", "--out", str(tmp_path / "o")]) == 0
    assert (tmp_path / "o" / "model.safetensors").is_file() and (tmp_path / "o" / "meta.json").is_file()


def test_missing_text_column_is_a_one_line_error_exit_2(tmp_path, capsys):
    f = tmp_path / "d.csv"
    f.write_text("words,label\nhi,pos\n")
    assert main(["train", "--data", str(f), "--out", str(tmp_path / "o")]) == 2
    assert "no column 'text' (columns: words, label)" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_empty_data_file_is_an_error_exit_2(tmp_path, capsys):
    f = tmp_path / "d.csv"
    f.write_text("")
    assert main(["train", "--data", str(f), "--out", str(tmp_path / "o")]) == 2
    assert "d.csv is empty" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_evaluate_reports_metrics_and_rejects_unknown_labels(tmp_path, capsys):
    f = tmp_path / "d.csv"
    f.write_text("text,label\n" + "".join(f"good fine {i},pos\nbad awful {i},neg\n" for i in range(10)))
    assert main(["train", "--data", str(f), "--epochs", "1", "--batch-size", "8", "--out", str(tmp_path / "o")]) == 0
    capsys.readouterr()
    assert main(["evaluate", str(tmp_path / "o"), "--data", str(f), "--json", str(tmp_path / "m.json")]) == 0
    m = json.loads((tmp_path / "m.json").read_text())
    assert set(m) == {"loss", "loss_class_weights", "accuracy", "macro_f1", "per_class"}
    assert set(m["per_class"]) == {"neg", "pos"} and m["loss_class_weights"] is None  # trained without them
    assert sum(c["support"] for c in m["per_class"].values()) == 20
    assert m["macro_f1"] == pytest.approx(np.mean([c["f1"] for c in m["per_class"].values()]))
    table = capsys.readouterr().out.splitlines()
    assert table[1].split() == ["class", "precision", "recall", "F1", "support"] and len(table) == 4
    g = tmp_path / "u.csv"
    g.write_text("text,label\ngood,maybe\n")
    capsys.readouterr()
    assert main(["evaluate", str(tmp_path / "o"), "--data", str(g), "--json", str(tmp_path / "u.json")]) == 2
    err = capsys.readouterr().err
    assert "unknown labels ['maybe'] (not seen in training" in err and len(err.splitlines()) == 1
    assert not (tmp_path / "u.json").exists()


def test_evaluate_reports_a_class_absent_from_labels_and_predictions_as_undefined(tmp_path, capsys):
    from s2l_jax.weights import load_weights, save_weights

    f = tmp_path / "d.csv"
    f.write_text("text,label\n" + "".join(f"good {i},a\nbad {i},b\nmeh {i},c\n" for i in range(4)))
    assert main(["train", "--data", str(f), "--epochs", "1", "--batch-size", "8", "--hidden-size", "4",
                 "--out", str(tmp_path / "o")]) == 0
    params, config = load_weights(tmp_path / "o" / "model.safetensors")  # a model that always answers "a"
    params["fc"] = {"weight": np.zeros_like(params["fc"]["weight"]), "bias": np.array([5, 0, 0], np.float32)}
    save_weights(tmp_path / "o" / "model.safetensors", params, config)
    g = tmp_path / "t.csv"  # three a's and one b; no c, and the model never predicts c
    g.write_text("text,label\ngood 1,a\ngood 2,a\ngood 3,a\nbad 1,b\n")
    capsys.readouterr()
    assert main(["evaluate", str(tmp_path / "o"), "--data", str(g), "--json", str(tmp_path / "m.json")]) == 0
    m = json.loads((tmp_path / "m.json").read_text())
    assert m["per_class"]["c"] == {"precision": None, "recall": None, "f1": None, "support": 0}
    assert m["per_class"]["b"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 1}
    f1_a = 2 * 3 / (4 + 3)  # 3 right of 4 predicted a, 3 true a
    assert m["macro_f1"] == pytest.approx((f1_a + 0.0) / 2)  # over a and b: c is in neither
    table = capsys.readouterr().out.splitlines()
    assert table[-1].split() == ["c", "-", "-", "-", "0"]


def test_evaluate_loss_is_weighted_by_the_runs_class_weights_as_its_validation_loss(tmp_path, capsys):
    torch = pytest.importorskip("torch")
    import parity
    from s2l_jax.run_dir import load_run, read_labelled

    f = tmp_path / "d.csv"
    f.write_text("text,label\n" + "".join(f"good fine {i},pos\ngood {i},pos\ngood ok {i},pos\nbad {i},neg\n"
                                          for i in range(6)))
    assert main(["train", "--data", str(f), "--valid", str(f), "--class-weights", "neg=3,pos=0.5", "--epochs", "2",
                 "--batch-size", "8", "--hidden-size", "4", "--out", str(tmp_path / "o")]) == 0
    capsys.readouterr()
    assert main(["evaluate", str(tmp_path / "o"), "--data", str(f), "--json", str(tmp_path / "m.json")]) == 0
    m = json.loads((tmp_path / "m.json").read_text())
    model, params, meta = load_run(tmp_path / "o")
    data = read_labelled(f, meta)
    tm = parity.to_torch({"params": params}, parity.TorchSequenceClassifier(model.config))
    with torch.no_grad():
        logits = tm(torch.from_numpy(data.inputs).long(), torch.from_numpy(data.lengths).long())
    labels = torch.from_numpy(data.labels).long()
    expected = torch.nn.functional.cross_entropy(logits, labels, weight=torch.tensor([3.0, 0.5])).item()
    assert abs(expected - torch.nn.functional.cross_entropy(logits, labels).item()) > 1e-3
    assert m["loss"] == pytest.approx(expected, rel=0, abs=1e-6)
    assert m["loss"] == pytest.approx(meta["history"][meta["best_epoch"] - 1]["valid_loss"], rel=0, abs=1e-6)
    assert m["loss_class_weights"] == {"neg": 3.0, "pos": 0.5}
    assert capsys.readouterr().out.startswith(f"loss {m['loss']:.4f} (weighted by the run's class weights: neg 3, "
                                              "pos 0.5)  accuracy")


def test_predict_prints_one_label_per_input_line(tmp_path, capsys, monkeypatch):
    f = tmp_path / "d.csv"
    f.write_text("text,label\n" + "".join(f"good fine {i},pos\nbad awful {i},neg\n" for i in range(10)))
    assert main(["train", "--data", str(f), "--epochs", "1", "--batch-size", "8", "--out", str(tmp_path / "o")]) == 0
    capsys.readouterr()
    monkeypatch.setattr("sys.stdin", stdin(b"good fine\nbad awful\n\n  \r\nzzz"))
    assert main(["predict", str(tmp_path / "o")]) == 0
    lines = capsys.readouterr().out.split("\n")
    assert len(lines) == 6 and lines[-1] == "" and set(lines[:5]) <= {"pos", "neg"}  # blank lines get a label too
    monkeypatch.setattr("sys.stdin", stdin(b"good fine\nbad awful\n\n  \r\nzzz"))
    assert main(["predict", str(tmp_path / "o"), "--jsonl"]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [r["label"] for r in rows] == lines[:5]
    for r in rows:
        probs = r["probabilities"]
        assert set(probs) == {"pos", "neg"} and abs(sum(probs.values()) - 1) < 1e-6
        assert max(probs, key=probs.get) == r["label"]
    monkeypatch.setattr("sys.stdin", stdin(b"good caf\xe9\n"))
    assert main(["predict", str(tmp_path / "o")]) == 2
    assert "stdin:1: not UTF-8 text (byte 0xe9 at offset 8)" in capsys.readouterr().err
    monkeypatch.setattr("sys.stdin", stdin(b"good fine\n"))
    assert main(["predict", str(tmp_path / "o"), "--batch-size", "0"]) == 2
    assert "batch size must be >= 1, got 0" in capsys.readouterr().err


def write_ts(path, n=24, multivariate=False, lengths=(3, 9)):
    """A UCR/UEA-style .ts file: variable-length series, class = sign of the series' first value."""
    rng = np.random.default_rng(0)
    lines = ["# tiny test file", "@problemName Tiny", "@timeStamps false", "@missing false",
             f"@univariate {'false' if multivariate else 'true'}", "@equalLength false", "@classLabel true up down",
             "@data"]
    for i in range(n):
        label = ("up", "down")[i % 2]
        x = rng.normal(size=rng.integers(*lengths)) * 0.1 + (1.0 if label == "up" else -1.0)
        dims = [x, x[::-1]] if multivariate else [x]
        lines.append(":".join(",".join(f"{v:.4f}" for v in d) for d in dims) + f":{label}")
    path.write_text("\n".join(lines) + "\n")


def test_ts_series_train_evaluate_and_predict_without_an_embedding(tmp_path, capsys):
    f = tmp_path / "train.ts"
    write_ts(f, multivariate=True)
    out = tmp_path / "o"
    assert main(["train", "--data", str(f), "--valid", str(f), "--epochs", "15", "--batch-size", "8", "--lr", "1e-2",
                 "--warmup", "2", "--hidden-size", "8", "--out", str(out)]) == 0
    from s2l_jax.weights import load_weights

    params, config = load_weights(out / "model.safetensors")
    assert config.vocab_size is None and config.input_size == 2 and "embedding" not in params
    assert main(["evaluate", str(out), "--data", str(f), "--json", str(tmp_path / "m.json")]) == 0
    assert json.loads((tmp_path / "m.json").read_text())["accuracy"] == 1.0
    capsys.readouterr()
    assert main(["predict", str(out), "--data", str(f)]) == 0
    assert capsys.readouterr().out.split() == ["up", "down"] * 12


@pytest.mark.slow  # ~35 s; remat against no remat per layout: test_recurrent, test_native_rnn
def test_cell_layers_and_remat_flags_train_a_stacked_gru_and_remat_changes_nothing(tmp_path):
    f = tmp_path / "train.ts"
    write_ts(f, lengths=(20, 40))  # padded to 32 or 64 steps: 2-4 recomputed chunks of 16
    common = ["train", "--data", str(f), "--valid", str(f), "--epochs", "3", "--batch-size", "8", "--hidden-size",
              "8", "--preset", "attention", "--cell", "gru", "--num-layers", "2"]
    assert main([*common, "--out", str(tmp_path / "plain")]) == 0
    assert main([*common, "--remat", "--out", str(tmp_path / "remat")]) == 0
    from s2l_jax.weights import load_weights

    plain, config = load_weights(tmp_path / "plain" / "model.safetensors")
    remat, _ = load_weights(tmp_path / "remat" / "model.safetensors")
    assert config.cell == "gru" and config.num_layers == 2 and "weight_hh_l1_reverse" in plain["encoder"]
    for a, b in zip(jax.tree.leaves(plain), jax.tree.leaves(remat), strict=True):
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-5)
    assert main(["evaluate", str(tmp_path / "remat"), "--data", str(f), "--json", str(tmp_path / "m.json")]) == 0


def test_architecture_flags_build_that_model_and_it_matches_torch(tmp_path, capsys):
    f = tmp_path / "d.csv"
    f.write_text("text,label\n" + "".join(f"good fine {i},pos\nbad awful {i},neg\n" for i in range(10)))
    out = tmp_path / "o"
    assert main(["train", "--data", str(f), "--epochs", "2", "--batch-size", "8", "--preset", "last",
                 "--pooling", "max", "--bidirectional", "--num-layers", "2", "--hidden-size", "12",
                 "--proj-size", "5", "--embedding-dim", "7", "--dropout", "0.2", "--rnn-dropout", "0.1",
                 "--out", str(out)]) == 0
    from s2l_jax.weights import load_weights

    params, config = load_weights(out / "model.safetensors")
    assert (config.pooling, config.bidirectional, config.num_layers, config.hidden_size, config.proj_size,
            config.embedding_dim, config.dropout, config.rnn_dropout) == ("max", True, 2, 12, 5, 7, 0.2, 0.1)
    assert params["encoder"]["weight_hr_l1_reverse"].shape == (5, 12)
    capsys.readouterr()
    assert main(["parity", str(out / "model.safetensors"), "--pooling", "max", "--batch", "3", "--length", "6",
                 "--lengths", "--padding-idx", "0", "--steps", "2"]) == 0, capsys.readouterr().out
    assert capsys.readouterr().out.rstrip().endswith("PASS")


@pytest.mark.parametrize("flags,message", [
    (["--cell", "gru", "--proj-size", "4"], "proj_size is only defined for the lstm cell, not 'gru'"),
    (["--hidden-size", "8", "--proj-size", "8"], "proj_size must lie in [0, hidden_size=8), got 8"),
    (["--dropout", "1.0"], "dropout must lie in [0, 1), got 1.0"),
    (["--embedding-dim", "0"], "embedding_dim must be >= 1, got 0"),
])
def test_architecture_flags_that_build_no_model_are_one_line_errors(tmp_path, capsys, flags, message):
    f = tmp_path / "d.csv"
    f.write_text("text,label\n" + "".join(f"good fine {i},pos\nbad awful {i},neg\n" for i in range(4)))
    assert main(["train", "--data", str(f), *flags, "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.splitlines()) == 1, err
    assert not (tmp_path / "o").exists()


def test_embedding_dim_on_feature_inputs_is_refused(tmp_path, capsys):
    assert main(["train", "--embedding-dim", "8", "--out", str(tmp_path / "o")]) == 2
    assert "--embedding-dim applies to text data" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_init_from_fine_tunes_a_run_on_new_data_with_its_vocabulary_and_labels(tmp_path, capsys):
    f = tmp_path / "d.csv"
    f.write_text("text,label\n" + "".join(f"good fine {i},pos\nbad awful {i},neg\n" for i in range(10)))
    g = tmp_path / "new.csv"  # other column names, a word the first run never saw, one of its two labels
    g.write_text("sentence,y\n" + "".join(f"fine unseen {i},pos\n" for i in range(8)))
    assert main(["train", "--data", str(f), "--epochs", "2", "--batch-size", "8", "--preset", "attention",
                 "--hidden-size", "6", "--out", str(tmp_path / "a")]) == 0
    from s2l_jax.weights import load_weights

    start, config = load_weights(tmp_path / "a" / "model.safetensors")
    assert main(["train", "--data", str(g), "--valid", str(g), "--text-col", "sentence", "--label-col", "y",
                 "--init-from", str(tmp_path / "a"), "--epochs", "1", "--batch-size", "8", "--lr", "1e-12",
                 "--warmup", "0", "--weight-decay", "0", "--out", str(tmp_path / "b")]) == 0
    tuned, tuned_config = load_weights(tmp_path / "b" / "model.safetensors")
    assert tuned_config == config
    for a, b in zip(jax.tree.leaves(tuned), jax.tree.leaves(start), strict=True):
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-9)
    meta_a, meta_b = (json.loads((tmp_path / d / "meta.json").read_text()) for d in "ab")
    assert (meta_b["vocab"], meta_b["labels"], meta_b["preset"]) == (meta_a["vocab"], meta_a["labels"], "attention")
    assert meta_b["init_from"] == str(tmp_path / "a") and meta_b["text_col"] == "sentence"
    capsys.readouterr()
    assert main(["evaluate", str(tmp_path / "b"), "--data", str(g)]) == 0
    capsys.readouterr()
    # Another run's weights would be ignored for the checkpoint's, while meta.json named that run
    assert main(["train", "--data", str(g), "--valid", str(g), "--text-col", "sentence", "--label-col", "y",
                 "--epochs", "1", "--batch-size", "8", "--lr", "1e-12", "--warmup", "0", "--weight-decay", "0",
                 "--out", str(tmp_path / "b"), "--resume", "--init-from", str(tmp_path / "b")]) == 2
    assert (f"was started with --init-from {tmp_path / 'a'}: resume it with --init-from {tmp_path / 'a'} or "
            "without --init-from") in capsys.readouterr().err
    assert main(["train", "--data", str(f), "--epochs", "2", "--batch-size", "8", "--preset", "attention",
                 "--hidden-size", "6", "--out", str(tmp_path / "a"), "--resume",
                 "--init-from", str(tmp_path / "b")]) == 2
    assert f"{tmp_path / 'a'} was started without --init-from: resume it without" in capsys.readouterr().err


@pytest.mark.slow  # ~22 s: three training runs
def test_a_fine_tune_resumes_from_its_own_directory_once_the_run_it_started_from_is_gone(tmp_path):
    """The checkpoint holds the weights, the config and the vocabulary: resuming reads nothing of --init-from."""
    import shutil

    from s2l_jax.checkpoint import list_checkpoints
    from s2l_jax.weights import read_safetensors

    f = tmp_path / "d.csv"
    f.write_text("text,label\n" + "".join(f"good fine {i},pos\nbad awful {i},neg\n" for i in range(6)))
    assert main(["train", "--data", str(f), "--epochs", "1", "--batch-size", "8", "--hidden-size", "4",
                 "--preset", "attention", "--out", str(tmp_path / "a")]) == 0
    tune = ["train", "--data", str(f), "--epochs", "3", "--batch-size", "8", "--init-from", str(tmp_path / "a"),
            "--dropout", "0.1", "--out", str(tmp_path / "b")]
    assert main(tune) == 0
    final = list_checkpoints(tmp_path / "b" / "checkpoints")[-1]
    expected = read_safetensors(final / "arrays.safetensors")[0]
    shutil.move(tmp_path / "a", tmp_path / "moved")  # then deleted: the original is no longer where it was
    for command in (tune, [a for a in tune if a not in ("--init-from", str(tmp_path / "a"))]):
        shutil.rmtree(final)  # as if killed before the last epoch's checkpoint was written
        assert main([*command, "--resume"]) == 0
        got = read_safetensors(final / "arrays.safetensors")[0]
        for k in expected:
            np.testing.assert_array_equal(got[k], expected[k], err_msg=k)
        assert json.loads((tmp_path / "b" / "meta.json").read_text())["init_from"] == str(tmp_path / "a")
        shutil.rmtree(tmp_path / "moved", ignore_errors=True)


def test_init_from_refuses_what_cannot_fine_tune_that_run(tmp_path, capsys):
    f = tmp_path / "d.csv"
    f.write_text("text,label\n" + "".join(f"good fine {i},pos\nbad awful {i},neg\n" for i in range(4)))
    assert main(["train", "--data", str(f), "--epochs", "1", "--batch-size", "8", "--hidden-size", "4",
                 "--out", str(tmp_path / "a")]) == 0
    u = tmp_path / "u.csv"
    u.write_text("text,label\ngood,maybe\nbad,pos\n")
    init = ["--init-from", str(tmp_path / "a"), "--out", str(tmp_path / "b")]
    cases = [(["--data", str(f), "--hidden-size", "8", "--pooling", "max"],
              "--hidden-size, --pooling: the architecture comes from --init-from"),
             ([], "was trained on text data; this is digits data"),
             (["--data", str(f), "--multi-label"], "is a single-label model; drop --multi-label"),
             (["--data", str(u)], "unknown labels ['maybe']"),
             (["--data", str(f), "--init-from", str(tmp_path)], "is not a trained run"),
             (["--data", str(f), "--init-from", ""], "--init-from is empty"),  # trained from scratch
             (["--data", str(f), "--init-from", str(tmp_path / "a"), "--embeddings", ""], "--embeddings is empty")]
    capsys.readouterr()
    for flags, message in cases:
        assert main(["train", *init, *flags]) == 2
        err = capsys.readouterr().err
        assert message in err and len(err.splitlines()) == 1, err
    assert not (tmp_path / "b").exists()


def test_likely_mistakes_in_flags_are_warned_about_or_refused_before_training(tmp_path, capsys):
    f = tmp_path / "d.csv"
    f.write_text("text,label\n" + "".join(f"good fine {i},pos|long\nbad awful {i},neg\n" for i in range(4)))
    assert main(["train", "--data", str(f), "--epochs", "1", "--batch-size", "8", "--hidden-size", "4",
                 "--rnn-dropout", "0.3", "--out", str(tmp_path / "o")]) == 0
    err = capsys.readouterr().err
    assert "labels such as 'pos|long' hold --label-sep '|'; each is trained as one class" in err
    assert "--rnn-dropout applies between stacked recurrent layers; with one layer it does nothing" in err
    (tmp_path / "afile").write_text("")
    assert main(["train", "--data", str(f), "--out", str(tmp_path / "afile")]) == 2
    assert "afile is a file; the run needs a directory (nothing was written)" in capsys.readouterr().err
    assert (tmp_path / "afile").read_text() == ""


def test_class_weights_flag_balances_the_loss_and_bad_specs_are_one_line_errors(tmp_path, capsys):
    f = tmp_path / "d.csv"
    f.write_text("text,label\n" + "".join(f"good fine {i},pos\n" for i in range(12))
                 + "".join(f"bad awful {i},neg\n" for i in range(4)))
    args = ["train", "--data", str(f), "--valid", str(f), "--epochs", "1", "--batch-size", "8", "--hidden-size", "4",
            "--out", str(tmp_path / "o")]
    assert main([*args, "--class-weights", "balanced"]) == 0
    assert "class weights: neg 2, pos 0.6667" in capsys.readouterr().out  # 16 / (2 x 4), 16 / (2 x 12)
    state = json.loads(next((tmp_path / "o" / "checkpoints").glob("*/state.json")).read_text())
    assert state["train_config"]["class_weights"] == [2.0, 16 / 24]
    assert main([*args, "--class-weights", "balanced", "--resume"]) == 0  # the same weights: the same run
    for spec, message in [("1,2,3", "--class-weights gives 3 numbers for 2 classes (neg, pos)"),
                          ("heavy", "--class-weights takes 'balanced', one number per class in label order or "
                                    "NAME=W pairs, got 'heavy'"),
                          ("pos=2,neu=1", "--class-weights names ['neu', 'pos']; the classes are neg, pos"),
                          ("pos=2", "--class-weights names ['pos']; the classes are neg, pos"),
                          ("1,-1", "class_weights must be finite and > 0, got [1.0, -1.0]"),
                          ("", "--class-weights is empty: give a value or leave the flag out")]:
        assert main([*args[:-1], str(tmp_path / "p"), "--class-weights", spec]) == 2
        err = capsys.readouterr().err
        assert message in err and len(err.splitlines()) == 1, err
    assert not (tmp_path / "p").exists()
    from s2l_jax.data import Dataset
    from s2l_jax.train_cli import class_weights

    only_pos = Dataset(np.ones((3, 2), np.int32), np.ones(3, np.int32), np.ones(3, np.int32), ("neg", "pos"))
    with pytest.raises(ValueError, match="--class-weights balanced: the training rows hold no neg; give the weights "
                       "by name instead"):
        class_weights("balanced", only_pos, ["neg", "pos"])
    assert class_weights("pos=2, neg=0.5", only_pos, ["neg", "pos"]) == (0.5, 2.0)


def test_pretrained_word_vectors_initialise_the_embedding_rows_of_the_words_they_hold(tmp_path, capsys):
    f = tmp_path / "d.csv"
    f.write_text("text,label\n" + "".join(f"good fine {i},pos\nbad awful {i},neg\n" for i in range(10)))
    vectors = {"good": [0.5, -1.0, 2.0], "bad": [-0.25, 3.0, 1.5], "unused": [9.0, 9.0, 9.0],
               "Fine": [4.0, 5.0, 6.0]}  # cased, as fastText's: fills the lowercased vocabulary's "fine"
    g = tmp_path / "glove.txt"
    g.write_text("".join(f"{w} {' '.join(map(str, v))}\n" for w, v in vectors.items()))
    args = ["train", "--data", str(f), "--epochs", "1", "--batch-size", "64", "--lr", "1e-12", "--warmup", "0",
            "--weight-decay", "0", "--hidden-size", "4", "--out", str(tmp_path / "o")]
    assert main([*args, "--embeddings", str(g)]) == 0
    from s2l_jax.weights import load_weights

    params, config = load_weights(tmp_path / "o" / "model.safetensors")
    vocab = json.loads((tmp_path / "o" / "meta.json").read_text())["vocab"]
    assert (f"pretrained vectors for 3 of the vocabulary's {len(vocab) - 2} words, 1 of them from a cased entry "
            "('Fine' for 'fine')") in capsys.readouterr().out
    table = np.asarray(params["embedding"]["weight"])
    assert config.embedding_dim == 3 and table.shape == (len(vocab), 3) and not table[0].any()  # padding row: 0
    for word, entry in (("good", "good"), ("bad", "bad"), ("fine", "Fine")):
        np.testing.assert_allclose(table[vocab.index(word)], vectors[entry], rtol=0, atol=1e-9)
    assert main([*args, "--resume", "--embeddings", f"{tmp_path}/./glove.txt"]) == 0  # the same file
    g.rename(tmp_path / "moved.txt")  # the checkpoint holds the weights: resuming reads no vectors
    assert main([*args, "--resume", "--embeddings", str(g)]) == 0 and main([*args, "--resume"]) == 0
    (tmp_path / "moved.txt").rename(g)
    h = tmp_path / "other.txt"
    h.write_text("good 1 2 3\n")
    capsys.readouterr()
    assert main([*args, "--resume", "--embeddings", str(h)]) == 2  # would be ignored, and named in meta.json
    assert (f"was started with --embeddings {g}: resume it with --embeddings {g} or without --embeddings"
            in capsys.readouterr().err)
    frozen = [*args[:-1], str(tmp_path / "f"), "--embeddings", str(g), "--freeze-embeddings", "--lr", "1e-2"]
    assert main(frozen) == 0
    np.testing.assert_array_equal(load_weights(tmp_path / "f" / "model.safetensors")[0]["embedding"]["weight"],
                                  table)  # the same init, never updated
    bad = [(["--embedding-dim", "5"], f"--embedding-dim 5, but {g} has 3 numbers per word"),
           (["--init-from", str(tmp_path / "o")], "--embeddings and --init-from both give the initial weights")]
    for flags, message in bad:
        assert main([*args[:-1], str(tmp_path / "p"), "--embeddings", str(g), *flags]) == 2
        err = capsys.readouterr().err
        assert message in err and len(err.splitlines()) == 1, err
    assert main(["train", "--embeddings", str(g), "--out", str(tmp_path / "p")]) == 2
    assert "--embeddings applies to text data" in capsys.readouterr().err
    assert not (tmp_path / "p").exists()


def test_multi_label_text_run_predicts_label_sets(tmp_path, capsys, monkeypatch):
    f = tmp_path / "d.jsonl"
    rows = [{"text": f"{a} {b} {i}", "label": "|".join(t for t, w in (("x", a), ("y", b)) if w.startswith("has"))}
            for i in range(6) for a in ("hasx", "nox") for b in ("hasy", "noy")]
    f.write_text("".join(json.dumps(r) + "\n" for r in rows if r["label"]))
    out = tmp_path / "o"
    assert main(["train", "--data", str(f), "--valid", str(f), "--multi-label", "--epochs", "30", "--batch-size", "6",
                 "--lr", "2e-2", "--warmup", "2", "--hidden-size", "8", "--out", str(out)]) == 0
    capsys.readouterr()
    monkeypatch.setattr("sys.stdin", stdin(b"hasx hasy\nhasx noy\nnox hasy\n"))
    assert main(["predict", str(out)]) == 0
    assert capsys.readouterr().out.splitlines() == ["x|y", "x", "y"]
    monkeypatch.setattr("sys.stdin", stdin(b"hasx hasy\nhasx noy\nnox hasy\n"))
    assert main(["predict", str(out), "--jsonl"]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [r["labels"] for r in rows] == [["x", "y"], ["x"], ["y"]]
    assert all(sorted(k for k, p in r["probabilities"].items() if p > 0.5) == r["labels"] for r in rows)


def test_long_sequences_are_truncated_with_a_warning_or_refused_by_flag(tmp_path, capsys):
    f = tmp_path / "d.csv"
    f.write_text("text,label\n" + "".join(f"a b c d e f {i},pos\nshort {i},neg\n" for i in range(4)))
    args = ["train", "--data", str(f), "--epochs", "1", "--batch-size", "4", "--max-len", "3"]
    assert main([*args, "--out", str(tmp_path / "t")]) == 0
    err = capsys.readouterr().err
    assert "warning: 4 of 8 sequences in" in err and "longer than --max-len 3" in err and "truncated" in err
    assert main([*args, "--on-long", "error", "--out", str(tmp_path / "e")]) == 2
    err = capsys.readouterr().err
    assert "longer than --max-len 3" in err and "--on-long truncate" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "e").exists()


def test_non_utf8_text_is_a_one_line_error_naming_the_line(tmp_path, capsys):
    f = tmp_path / "d.csv"
    f.write_bytes(b"text,label\nfine,pos\ncaf\xe9,neg\n")
    assert main(["train", "--data", str(f), "--out", str(tmp_path / "o")]) == 2
    assert "d.csv:3: not UTF-8 text (byte 0xe9" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_train_writes_a_metrics_log_a_plot_and_a_progress_bar(tmp_path, capsys):
    f = tmp_path / "d.csv"
    f.write_text("text,label\n" + "".join(f"good fine {i},pos\nbad awful {i},neg\n" for i in range(10)))
    out = tmp_path / "o"
    assert main(["train", "--data", str(f), "--epochs", "3", "--batch-size", "4", "--out", str(out), "--progress"]) == 0
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in records if r["kind"] == "epoch"] == [1, 2, 3]
    assert [r["step"] for r in records if r["kind"] == "step"] == [10]  # 4 steps per epoch, logged every 10
    assert (out / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "epoch 3/3 [####################] 4/4 loss" in capsys.readouterr().err


def test_resume_flag_continues_and_a_finished_run_is_not_overwritten(tmp_path, capsys):
    f = tmp_path / "d.csv"
    f.write_text("text,label\n" + "".join(f"good fine {i},pos\nbad awful {i},neg\n" for i in range(10)))
    args = ["train", "--data", str(f), "--epochs", "2", "--batch-size", "4", "--out", str(tmp_path / "o")]
    assert main(args) == 0
    before = (tmp_path / "o" / "model.safetensors").read_bytes()
    assert main(args) == 2
    assert "already holds a training run; pass --resume" in capsys.readouterr().err
    assert main([*args, "--resume"]) == 0  # already finished: nothing to do, same model
    assert (tmp_path / "o" / "model.safetensors").read_bytes() == before
    assert main([*args[:-4], "--batch-size", "8", "--out", str(tmp_path / "o"), "--resume"]) == 2
    assert "incompatible config: batch_size=4 (flags/config say 8)" in capsys.readouterr().err
    assert main(["train", "--data", str(f), "--epochs", "3", "--batch-size", "4", "--out", str(tmp_path / "o"),
                 "--resume"]) == 2
    assert "epochs=2 (flags/config say 3); to train a run further with a new schedule, start another from its " \
        "model (s2l train --init-from" in capsys.readouterr().err


@pytest.mark.parametrize("body, message", [
    ("@classLabel true a b\n", "no @data line"),
    ("@classLabel true a b\n@data\n", "has no series after @data"),
    ("@classLabel true a b\n@data\n1,2,?:a\n", ":3: missing values ('?') in dimension 0"),
    ("@classLabel true a b\n@data\n1,2:3:a\n", ":3: dimensions have different lengths [2, 1]"),
    ("@classLabel true a b\n@data\n1,x:a\n", ":3: dimension 0 is not a list of numbers"),
    ("@classLabel false\n@data\n1,2\n", "has no class labels (@classLabel false); training needs them"),
    ("@timeStamps true\n@data\n(0,1):a\n", "time-stamped .ts files are not supported"),
    ("@univariate true\n@classLabel true a b\n@data\n1,2:3,4:a\n",
     ":4: 2 dimensions, the header declares 1 (@univariate / @dimensions)"),
    ("@dimensions 3\n@classLabel true a b\n@data\n1,2:3,4:a\n", ":4: 2 dimensions, the header declares 3"),
    ("@dimensions two\n@data\n", ":1: @dimensions must be followed by a positive whole number"),
], ids=["no-data", "no-series", "missing-value", "ragged-dims", "not-numbers", "unlabelled", "timestamps",
        "univariate-header", "dimensions-header", "dimensions-not-a-number"])
def test_malformed_ts_files_are_one_line_errors_and_write_nothing(tmp_path, capsys, body, message):
    f = tmp_path / "d.ts"
    f.write_text(body)
    assert main(["train", "--data", str(f), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.splitlines()) == 1, err
    assert not (tmp_path / "o").exists()


def test_evaluating_a_text_run_on_a_ts_file_is_refused(tmp_path, capsys):
    f = tmp_path / "d.csv"
    f.write_text("text,label\n" + "".join(f"good fine {i},pos\nbad awful {i},neg\n" for i in range(4)))
    assert main(["train", "--data", str(f), "--epochs", "1", "--batch-size", "4", "--out", str(tmp_path / "o")]) == 0
    write_ts(tmp_path / "x.ts")
    capsys.readouterr()
    assert main(["evaluate", str(tmp_path / "o"), "--data", str(tmp_path / "x.ts")]) == 2
    assert "trained on text data; " in capsys.readouterr().err


@pytest.mark.parametrize("command", ["evaluate", "predict"])
def test_bad_run_directory_is_refused(tmp_path, capsys, command):
    f = tmp_path / "d.csv"
    f.write_text("text,label\nhi,pos\n")
    assert main([command, str(tmp_path / "nothing"), "--data", str(f)]) == 2
    assert "is not a trained run (needs meta.json and model.safetensors)" in capsys.readouterr().err


def test_vocabulary_is_built_from_the_training_rows_only(tmp_path):
    from s2l_jax.data import split_indices

    f = tmp_path / "d.csv"
    rows = [f"word{i} common,{'pos' if i % 2 else 'neg'}" for i in range(20)]
    f.write_text("text,label\n" + "\n".join(rows) + "\n")
    assert main(["train", "--data", str(f), "--epochs", "1", "--batch-size", "8", "--out", str(tmp_path / "o")]) == 0
    vocab = set(json.loads((tmp_path / "o" / "meta.json").read_text())["vocab"])
    train, valid = split_indices(20, seed=0)
    assert {f"word{i}" for i in train} <= vocab and not {f"word{i}" for i in valid} & vocab


def test_resume_with_other_data_settings_or_data_flags_without_data_is_refused(tmp_path, capsys):
    f = tmp_path / "d.csv"
    f.write_text("text,label\n" + "".join(f"good fine {i},pos\nbad awful {i},neg\n" for i in range(10)))
    args = ["train", "--data", str(f), "--epochs", "2", "--batch-size", "8", "--checkpoint-every", "2",
            "--out", str(tmp_path / "o")]
    assert main(args) == 0
    capsys.readouterr()
    assert main([*args, "--resume", "--multi-label", "--max-len", "9"]) == 2
    err = capsys.readouterr().err
    assert "read its data with other settings: label_sep=None (flags say '|'); max_len=256 (flags say 9)" in err
    for flag in (["--valid", str(f)], ["--multi-label"]):
        assert main(["train", *flag, "--out", str(tmp_path / "d")]) == 2
        assert f"{flag[0]} applies to --data" in capsys.readouterr().err
    assert not (tmp_path / "d").exists()


def test_flags_and_data_that_cannot_train_a_classifier_are_one_line_errors(tmp_path, capsys):
    f = tmp_path / "d.csv"
    f.write_text("text,label\n" + "".join(f"good fine {i},pos\n" for i in range(6)))
    cases = [([], "the training data holds one class, ['pos']: a classifier needs at least two"),
             (["--max-len", "0"], "--max-len must be >= 1, got 0"),
             (["--multi-label", "--label-sep", ""], "--label-sep must not be empty")]
    for flags, message in cases:
        assert main(["train", "--data", str(f), *flags, "--out", str(tmp_path / "o")]) == 2
        err = capsys.readouterr().err
        assert message in err and len(err.splitlines()) == 1, err
    assert not (tmp_path / "o").exists()


def test_a_digits_run_says_it_reads_no_text():
    from s2l_jax.run_dir import read_unlabelled

    with pytest.raises(ValueError, match="built-in digits dataset; it reads no text or files"):
        read_unlabelled(None, ["a text"], {"kind": "digits", "labels": [str(i) for i in range(10)]})
