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
