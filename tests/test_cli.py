"""The command line as a user runs it, and s2l_jax importing without torch."""

import subprocess
import sys

import pytest

from s2l_jax.cli import main


def test_demo_converts_the_seed_models_and_passes(capsys):
    assert main(["demo", "--batch", "4", "--length", "6"]) == 0
    out = capsys.readouterr().out
    for name in ("last", "mean", "attention"):
        assert name in out
    assert "PASS" in out


@pytest.mark.parametrize("flags", [["--length", "-1"], ["--length", "0"], ["--batch", "0"]])
def test_demo_refuses_empty_or_negative_sizes_with_one_line_before_printing(flags, capsys):
    """`--length -1` was a torch RuntimeError traceback (exit 1); `--batch 0` printed the table's header first."""
    assert main(["demo", *flags]) == 2
    out, err = capsys.readouterr()
    assert out == "" and err.count("\n") == 1 and "--batch and --length must be >= 1" in err


BLOCK_TORCH = "import sys; sys.modules['torch'] = None; "


def test_s2l_jax_imports_and_runs_without_torch():
    code = BLOCK_TORCH + (
        "import jax, jax.numpy as jnp, s2l_jax; "
        "m = s2l_jax.SequenceClassifier(s2l_jax.PRESETS['attention']); "
        "v = m.init(jax.random.key(0), jnp.zeros((2, 3), int)); print(m.apply(v, jnp.ones((2, 3), int)).shape)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "(2, 5)" in done.stdout


def test_torch_commands_say_what_is_missing_without_torch():
    code = BLOCK_TORCH + "import sys; from s2l_jax.cli import main; sys.exit(main(['demo']))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert done.returncode == 2
    assert "needs torch" in done.stderr and "Traceback" not in done.stderr


def test_a_command_imports_only_its_own_module():
    """Start-up: `s2l train/predict/evaluate` do not pay for the parity commands' torch import (~1.2 s)."""
    code = ("import sys; from s2l_jax.cli import main\n"
            "for argv in (['train', '--help'], ['--help']):\n"
            "    try:\n        main(argv)\n    except SystemExit:\n        pass\n"
            "print('torch imported:', 'torch' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "--preset" in done.stdout and "parity" in done.stdout  # train's flags, and every command listed
    assert "torch imported: False" in done.stdout


def test_output_cut_short_by_the_reader_ends_quietly(tmp_path):
    """`s2l predict ... | head`: the closed pipe is not reported as an error."""
    f = tmp_path / "d.csv"
    f.write_text("text,label\n" + "".join(f"good fine {i},pos\nbad awful {i},neg\n" for i in range(10)))
    assert main(["train", "--data", str(f), "--epochs", "1", "--batch-size", "8", "--out", str(tmp_path / "o")]) == 0
    g = tmp_path / "many.csv"
    g.write_text("text\n" + "good fine\n" * 30000)  # 120 kB of labels: more than a pipe holds
    proc = subprocess.Popen([sys.executable, "-m", "s2l_jax", "predict", str(tmp_path / "o"), "--data", str(g)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stdout.readline().strip() in (b"pos", b"neg")
    proc.stdout.close()
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=300) == 141 and err == "", err


def test_s2l_traceback_shows_where_a_one_line_error_came_from(tmp_path, monkeypatch, capsys):
    assert main(["predict", str(tmp_path / "absent")]) == 2
    assert "is not a trained run" in capsys.readouterr().err
    monkeypatch.setenv("S2L_TRACEBACK", "1")
    with pytest.raises(FileNotFoundError, match="is not a trained run"):
        main(["predict", str(tmp_path / "absent")])
