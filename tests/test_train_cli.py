from s2l_jax.cli import main


def test_train_on_text_csv_saves_model_and_meta(tmp_path):
    f = tmp_path / "d.csv"
    f.write_text("text,label\n" + "".join(f"good fine {i},pos\nbad awful {i},neg\n" for i in range(10)))
    assert main(["train", "--data", str(f), "--epochs", "2", "--batch-size", "8", "--out", str(tmp_path / "o")]) == 0
    assert (tmp_path / "o" / "model.safetensors").is_file() and (tmp_path / "o" / "meta.json").is_file()


def test_missing_text_column_is_a_one_line_error_exit_2(tmp_path, capsys):
    f = tmp_path / "d.csv"
    f.write_text("words,label\nhi,pos\n")
    assert main(["train", "--data", str(f), "--out", str(tmp_path / "o")]) == 2
    assert "no column 'text'" in capsys.readouterr().err


def test_empty_data_file_is_an_error_exit_2(tmp_path, capsys):
    f = tmp_path / "d.csv"
    f.write_text("")
    assert main(["train", "--data", str(f), "--out", str(tmp_path / "o")]) == 2
    assert "empty" in capsys.readouterr().err


def test_evaluate_reports_metrics_and_rejects_unknown_labels(tmp_path, capsys):
    import json

    f = tmp_path / "d.csv"
    f.write_text("text,label\n" + "".join(f"good fine {i},pos\nbad awful {i},neg\n" for i in range(10)))
    assert main(["train", "--data", str(f), "--epochs", "1", "--batch-size", "8", "--out", str(tmp_path / "o")]) == 0
    assert main(["evaluate", str(tmp_path / "o"), "--data", str(f), "--json", str(tmp_path / "m.json")]) == 0
    assert set(json.loads((tmp_path / "m.json").read_text())) == {"loss", "accuracy", "macro_f1"}
    g = tmp_path / "u.csv"
    g.write_text("text,label\ngood,maybe\n")
    assert main(["evaluate", str(tmp_path / "o"), "--data", str(g)]) == 2
    assert "unknown labels" in capsys.readouterr().err


def test_predict_prints_one_label_per_input_line(tmp_path, capsys, monkeypatch):
    import io

    f = tmp_path / "d.csv"
    f.write_text("text,label\n" + "".join(f"good fine {i},pos\nbad awful {i},neg\n" for i in range(10)))
    assert main(["train", "--data", str(f), "--epochs", "1", "--batch-size", "8", "--out", str(tmp_path / "o")]) == 0
    capsys.readouterr()
    monkeypatch.setattr("sys.stdin", io.StringIO("good fine\nbad awful\nzzz\n"))
    assert main(["predict", str(tmp_path / "o")]) == 0
    lines = capsys.readouterr().out.split()
    assert len(lines) == 3 and set(lines) <= {"pos", "neg"}
