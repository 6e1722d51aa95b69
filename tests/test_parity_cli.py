"""`s2l convert` and `s2l parity` as a user runs them: exit 0 on pass, 1 on fail, 2 with one line on bad input."""

import json

import pytest
import torch

from parity.torch_models import SEED_MODELS
from s2l_jax.cli import main
from s2l_jax.weights import load_classifier

SMALL = dict(vocab_size=30, embedding_dim=4, hidden_dim=5, num_classes=3)


@pytest.fixture
def user_file(tmp_path):
    tm = SEED_MODELS["attention"](**SMALL)
    torch.save(tm.state_dict(), tmp_path / "model.pt")
    return tm, tmp_path / "model.pt"


def test_convert_torch_to_jax_and_back_is_bit_exact(user_file, tmp_path, capsys):
    tm, path = user_file
    assert main(["convert", str(path), str(tmp_path / "m.safetensors")]) == 0
    assert "pooling attention" in capsys.readouterr().out
    model, _ = load_classifier(tmp_path / "m.safetensors")
    assert model.config.pooling == "attention" and model.config.vocab_size == 30
    assert main(["convert", str(tmp_path / "m.safetensors"), str(tmp_path / "back.pt")]) == 0
    back = SEED_MODELS["attention"](**SMALL)
    back.load_state_dict(torch.load(tmp_path / "back.pt", weights_only=True), strict=True)
    assert all(torch.equal(a, b) for a, b in zip(tm.state_dict().values(), back.state_dict().values(), strict=True))


@pytest.mark.parametrize("dst", ["m.safetensors", "./sub/../m.safetensors"])
def test_converting_a_file_onto_itself_is_refused_and_leaves_it_unchanged(user_file, tmp_path, capsys, dst):
    """`s2l convert m.safetensors m.safetensors` overwrote the JAX checkpoint with a torch-named state_dict without
    its config (pooling lost), and reported success."""
    _, path = user_file
    assert main(["convert", str(path), str(tmp_path / "m.safetensors")]) == 0
    (tmp_path / "sub").mkdir()
    before = (tmp_path / "m.safetensors").read_bytes()
    capsys.readouterr()
    assert main(["convert", str(tmp_path / "m.safetensors"), str(tmp_path / dst)]) == 2
    err = capsys.readouterr().err
    assert "is the input file; choose another output" in err and len(err.splitlines()) == 1, err
    assert (tmp_path / "m.safetensors").read_bytes() == before


@pytest.mark.parametrize("command", ["convert", "parity"])
def test_flags_that_contradict_a_checkpoints_config_are_refused_not_ignored(tmp_path, capsys, command):
    """`--nonlinearity relu` / `--padding-idx` on an s2l checkpoint were silently ignored: `s2l parity m.safetensors
    --nonlinearity relu` reported PASS for the tanh model it holds (`--pooling` was already refused)."""
    rnn = torch.nn.Sequential()
    rnn.embedding, rnn.encoder, rnn.fc = torch.nn.Embedding(7, 3), torch.nn.RNN(3, 4, batch_first=True), \
        torch.nn.Linear(4, 2)
    torch.save(rnn.state_dict(), tmp_path / "rnn.pt")
    ckpt = str(tmp_path / "m.safetensors")
    assert main(["convert", str(tmp_path / "rnn.pt"), ckpt, "--pooling", "max", "--padding-idx", "0"]) == 0
    out = [str(tmp_path / "back.pt")] if command == "convert" else []
    for flags, message in ((["--nonlinearity", "relu"], "config says cell 'rnn_tanh', not a relu RNN"),
                           (["--padding-idx", "2"], "config says padding_idx 0, not 2")):
        capsys.readouterr()
        assert main([command, ckpt, *out, *flags]) == 2
        err = capsys.readouterr().err
        assert message in err and len(err.splitlines()) == 1, err
    assert main([command, ckpt, *out, "--nonlinearity", "tanh", "--padding-idx", "0"]) == 0  # agreeing: accepted


def test_parity_passes_forward_gradients_and_training_and_writes_the_report(user_file, tmp_path, capsys):
    _, path = user_file
    code = main(["parity", str(path), "--batch", "3", "--length", "5", "--lengths", "--steps", "3",
                 "--report", str(tmp_path / "r.json")])
    out = capsys.readouterr().out
    assert code == 0, out
    assert "gradient attention.attn.weight" in out and "3 adam steps" in out and out.rstrip().endswith("PASS")
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["passed"] and any(e["kind"] == "step 3" for e in report["entries"])


def test_parity_exits_1_when_differences_exceed_the_tolerance(user_file, capsys):
    _, path = user_file
    assert main(["parity", str(path), "--batch", "3", "--length", "5", "--atol", "0", "--rtol", "0"]) == 1
    out = capsys.readouterr().out
    assert "first failure: output output" in out and out.rstrip().endswith("FAIL")


def _error_line(capsys) -> str:
    err = capsys.readouterr().err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    return err


def test_bad_files_exit_2_with_one_line(user_file, tmp_path, capsys):
    tm, path = user_file
    assert main(["parity", str(tmp_path / "absent.pt")]) == 2
    assert "no such weight file" in _error_line(capsys)
    (tmp_path / "corrupt.pt").write_bytes(path.read_bytes()[:100])
    assert main(["convert", str(tmp_path / "corrupt.pt"), str(tmp_path / "x.safetensors")]) == 2
    assert "not a readable torch file" in _error_line(capsys)
    torch.save({**tm.state_dict(), "extra.scale": torch.ones(2)}, tmp_path / "extra.pt")
    assert main(["parity", str(tmp_path / "extra.pt")]) == 2
    assert "unrecognised key 'extra.scale'" in _error_line(capsys)
    torch.save(SEED_MODELS["mean"](**SMALL).state_dict(), tmp_path / "mean.pt")
    assert main(["parity", str(tmp_path / "mean.pt")]) == 2
    assert "weights cannot tell how the model pools over time: pass pooling (--pooling)" in _error_line(capsys)
    assert main(["parity", str(path), "--report", "r.txt"]) == 2
    assert "must end in .json or .md" in _error_line(capsys)


def test_a_training_checkpoint_is_pointed_to_the_runs_model_file(tmp_path, capsys):
    from s2l_jax.checkpoint import latest_checkpoint

    f = tmp_path / "d.csv"
    f.write_text("text,label\n" + "".join(f"good fine {i},pos\nbad awful {i},neg\n" for i in range(4)))
    assert main(["train", "--data", str(f), "--epochs", "1", "--batch-size", "8", "--hidden-size", "4",
                 "--out", str(tmp_path / "r")]) == 0
    arrays = latest_checkpoint(tmp_path / "r" / "checkpoints") / "arrays.safetensors"
    capsys.readouterr()
    assert main(["convert", str(arrays), str(tmp_path / "x.pt"), "--pooling", "mean"]) == 2
    assert "is optimizer state: this is a training checkpoint's arrays; convert or check the run's " \
        "model.safetensors instead" in _error_line(capsys)
    assert main(["convert", str(tmp_path / "r" / "model.safetensors"), str(tmp_path / "x.pt")]) == 0


def test_a_bare_recurrent_state_dict_is_checked_as_that_layer(tmp_path, capsys):
    import torch

    from s2l_jax.cli import main

    torch.save(torch.nn.GRU(3, 4, num_layers=2, bidirectional=True).state_dict(), tmp_path / "gru.pt")
    assert main(["parity", str(tmp_path / "gru.pt"), "--lengths", "--batch", "3", "--length", "5"]) == 0
    out = capsys.readouterr().out
    assert "a bare GRU (2 layer(s), hidden 4, bidirectional)" in out and "gradient weight_hh_l1_reverse" in out
    assert out.rstrip().endswith("PASS")
    assert main(["parity", str(tmp_path / "gru.pt"), "--steps", "2"]) == 2
    assert "--steps needs a classifier" in capsys.readouterr().err
