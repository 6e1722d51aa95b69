"""Reading data files: CSV (RFC 4180 quoting), TSV (no quoting), JSONL and `.ts`, with errors naming the file line."""

from __future__ import annotations

import csv
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from s2l_jax.cli import main
from s2l_jax.model import ClassifierConfig, SequenceClassifier
from s2l_jax.run_dir import read_labelled, read_unlabelled
from s2l_jax.text import data_format, read_table
from s2l_jax.ts_format import read_ts
from s2l_jax.weights import save_weights


def write(path, text: str):
    path.write_bytes(text.encode("utf-8"))  # no newline translation: the bytes are exactly `text`
    return path


def test_a_csv_field_over_128_kib_is_read_whole_and_the_field_limit_is_left_as_it_was(tmp_path):
    long = "great " * 40_000  # 240,000 characters, over csv's default field limit of 131,072
    limit = csv.field_size_limit()
    texts, labels = read_table(write(tmp_path / "d.csv", f"text,label\n{long},pos\nshort,neg\n"), "text", "label")
    assert texts == [long, "short"] and labels == ["pos", "neg"]
    assert csv.field_size_limit() == limit


def test_a_quoted_csv_field_keeps_its_line_breaks(tmp_path):
    f = write(tmp_path / "d.csv", 'text,label\n"hello, world\nsecond line",pos\n"a\r\nb",neg\nlast,pos\n')
    assert read_table(f, "text", "label") == (["hello, world\nsecond line", "a\r\nb", "last"], ["pos", "neg", "pos"])


def test_tsv_quotes_are_literal_characters_and_swallow_no_rows(tmp_path):
    f = write(tmp_path / "d.tsv",
              'text\tlabel\n"quote start\tneg\nmiddle\tpos\nend quote" here\tpos\n"great" film\tpos\n')
    texts, labels = read_table(f, "text", "label")
    assert texts == ['"quote start', "middle", 'end quote" here', '"great" film']
    assert labels == ["neg", "pos", "pos", "pos"]


def test_lines_end_at_newline_only_not_at_unicode_line_separators(tmp_path):
    odd = "great\u2028film\x85and\u2029more\x0bend\x1c."
    rows = [{"text": odd, "label": "pos"}, {"text": "bad", "label": "neg"}]
    jsonl = write(tmp_path / "d.jsonl", "".join(json.dumps(r, ensure_ascii=False) + "\r\n" for r in rows))
    assert "\u2028" in jsonl.read_text(encoding="utf-8")
    assert read_table(jsonl, "text", "label") == ([odd, "bad"], ["pos", "neg"])
    table = write(tmp_path / "d.csv", f"text,label\n{odd},pos\nbad,neg\n")
    assert read_table(table, "text", "label") == ([odd, "bad"], ["pos", "neg"])
    ts = write(tmp_path / "d.ts", "@problemName toy\u2028name\x85x\n@classLabel true a b\n@data\n1,2:a\n3,4,5:b\n")
    series, labels, declared = read_ts(ts)
    assert [s.ravel().tolist() for s in series] == [[1, 2], [3, 4, 5]] and labels == ["a", "b"]
    assert declared == ("a", "b")


@pytest.mark.parametrize("name, body", [
    ("d.csv", "text,label\nfine,pos\n"),
    ("d.tsv", "text\tlabel\nfine\tpos\n"),
    ("d.jsonl", '{"text": "fine", "label": "pos"}\n'),
], ids=["csv", "tsv", "jsonl"])
def test_a_utf8_byte_order_mark_is_not_part_of_the_first_column(tmp_path, name, body):
    assert read_table(write(tmp_path / name, "\ufeff" + body), "text", "label") == (["fine"], ["pos"])


def test_non_utf8_bytes_after_a_byte_order_mark_still_name_their_line_and_offset(tmp_path):
    f = tmp_path / "d.csv"
    f.write_bytes(b"\xef\xbb\xbftext,label\nfine,pos\ncaf\xe9,neg\n")
    with pytest.raises(ValueError, match=r"d\.csv:3: not UTF-8 text \(byte 0xe9 at offset 26\)"):
        read_table(f, "text", "label")


def test_suffixes_are_case_insensitive_and_ndjson_is_jsonl(tmp_path):
    assert [data_format(p) for p in ("a.TS", "a.Ts", "a.JSONL", "a.ndjson", "a.NDJSON", "a.TSV", "a.CSV", "a")] == \
        ["ts", "ts", "jsonl", "jsonl", "jsonl", "tsv", "csv", "csv"]
    assert read_table(write(tmp_path / "d.TSV", "text\tlabel\nok, fine\tpos\n"), "text", "label") == (
        ["ok, fine"], ["pos"])
    for name in ("d.JSONL", "d.ndjson"):
        assert read_table(write(tmp_path / name, '{"text": "ok, fine", "label": "pos"}\n'), "text", "label") == (
            ["ok, fine"], ["pos"])
    with pytest.raises(ValueError, match=r"d\.TS is a \.ts time-series file, not a text table"):
        read_table(write(tmp_path / "d.TS", "@classLabel true a\n@data\n1,2:a\n"), "text", "label")
    series = read_labelled(tmp_path / "d.TS", {"kind": "series", "labels": ["a"], "max_len": 8})
    np.testing.assert_array_equal(series.inputs, [[[1.0], [2.0]]])


def test_row_errors_name_the_file_line_past_blank_lines_and_multi_line_records(tmp_path):
    f = write(tmp_path / "d.csv", 'text,label\n\n\ngood film,pos\n\n"multi\nline\ntext",neg\nbad film,\nok,pos\n')
    with pytest.raises(ValueError, match=r"d\.csv:9: no 'label' value$"):
        read_table(f, "text", "label")
    assert read_table(f, "text", None) == (["good film", "multi\nline\ntext", "bad film", "ok"], None)
    g = write(tmp_path / "d.jsonl", '{"text": "a", "label": "x"}\n\n{"text": "b"}\n')
    with pytest.raises(ValueError, match=r"d\.jsonl:3: no 'label' value$"):
        read_table(g, "text", "label")


def test_an_empty_csv_text_field_is_an_empty_text(tmp_path):
    assert read_table(write(tmp_path / "d.csv", "text,label\n,pos\n\"\",neg\n"), "text", "label") == (
        ["", ""], ["pos", "neg"])


def test_jsonl_integer_labels_are_the_same_class_as_their_strings(tmp_path):
    f = write(tmp_path / "d.jsonl",
              '{"text": "a", "label": 1}\n{"text": "b", "label": "1"}\n{"text": "c", "label": 0}\n')
    assert read_table(f, "text", "label") == (["a", "b", "c"], ["1", "1", "0"])


TABLE_ERRORS = [
    ("csv-duplicate-column", "d.csv", "text,label,text\nfine,pos,other\n",
     "d.csv:1: the header names columns ['text'] more than once"),
    ("csv-extra-field", "d.csv", "text,label\r\nfine,pos\r\ngreat, really great film,pos\r\n",
     "d.csv:3: 3 fields, the header has 2 (quote a text that holds a comma)"),
    ("tsv-extra-field", "d.tsv", "text\tlabel\nfine\tpos\ngreat\tfilm\tpos\n",
     "d.tsv:3: 3 fields, the header has 2 (a text holds a tab?)"),
    ("csv-unclosed-quote", "d.csv", 'text,label\nfine,pos\n"never closed,neg\nb,pos\n',
     "d.csv:3: malformed CSV record: unexpected end of data"),
    ("csv-text-after-quote", "d.csv", 'text,label\nfine,pos\n"great" film,pos\n',
     "d.csv:3: malformed CSV record: ',' expected after '\"'"),
    ("jsonl-float-label", "d.jsonl", '{"text": "a", "label": "1"}\n{"text": "b", "label": 1.0}\n',
     "d.jsonl:2: 'label' must be a JSON string or integer, got 1.0"),
    ("jsonl-bool-label", "d.jsonl", '{"text": "a", "label": true}\n',
     "d.jsonl:1: 'label' must be a JSON string or integer, got true"),
    ("jsonl-object-label", "d.jsonl", '{"text": "a", "label": {"x": 1}}\n',
     "d.jsonl:1: 'label' must be a JSON string or integer, got {\"x\": 1}"),
    ("jsonl-list-label", "d.jsonl", '{"text": "a", "label": ["x", "y"]}\n',
     "d.jsonl:1: 'label' is a list [\"x\", \"y\"]; give a label set as one string joined by --label-sep "
     "(e.g. \"a|b\")"),
    ("jsonl-null-label", "d.jsonl", '{"text": "a", "label": null}\n', "d.jsonl:1: no 'label' value"),
    ("jsonl-missing-text", "d.jsonl", '{"text": "a", "label": "x"}\n{"txt": "b", "label": "y"}\n',
     "d.jsonl:2: no 'text' value"),
    ("jsonl-number-text", "d.jsonl", '{"text": "a", "label": "x"}\n\n{"text": 0, "label": "y"}\n',
     "d.jsonl:3: 'text' must be a JSON string, got 0"),
    ("jsonl-null-text", "d.jsonl", '{"text": null, "label": "x"}\n', "d.jsonl:1: no 'text' value"),
]


@pytest.mark.parametrize("name, body, message", [t[1:] for t in TABLE_ERRORS], ids=[t[0] for t in TABLE_ERRORS])
def test_malformed_text_tables_are_one_line_errors_naming_the_line(tmp_path, capsys, name, body, message):
    f = write(tmp_path / name, body)
    with pytest.raises(ValueError) as e:
        read_table(f, "text", "label")
    assert str(e.value) == f"{f.parent}/{message}"
    assert main(["train", "--data", str(f), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.splitlines()) == 1, err
    assert not (tmp_path / "o").exists()


def test_text_errors_apply_when_reading_texts_only(tmp_path):
    with pytest.raises(ValueError, match=r"d\.jsonl:1: 'text' must be a JSON string, got 0$"):
        read_table(write(tmp_path / "d.jsonl", '{"text": 0}\n'), "text", None)
    with pytest.raises(ValueError, match=r"d\.csv:2: 3 fields, the header has 2"):
        read_table(write(tmp_path / "d.csv", "text,label\na,b,c\n"), "text", None)


TS = "@problemName toy\n{header}\n@data\n1,2:a\n3,4:{label}\n"


@pytest.mark.parametrize("header, label, message", [
    ("@classLabel", "b", "d.ts:2: @classLabel must be followed by true or false"),
    ("@classLabel yes a b", "b", "d.ts:2: @classLabel must be followed by true or false"),
    ("@timeStamps\n@classLabel true a b", "b", "d.ts:2: @timeStamps must be followed by true or false"),
    ("@classLabel true a", "b", "d.ts:5: class label 'b' is not among the classes declared by @classLabel (a)"),
], ids=["bare-classLabel", "classLabel-not-a-flag", "bare-timeStamps", "undeclared-label"])
def test_malformed_ts_headers_and_undeclared_labels_name_the_line(tmp_path, header, label, message):
    f = write(tmp_path / "d.ts", TS.format(header=header, label=label))
    with pytest.raises(ValueError) as e:
        read_ts(f)
    assert str(e.value) == f"{tmp_path}/{message}"


@pytest.mark.parametrize("header, body", [
    ("@classLabel true a b", "1,2:a\n3,4\n"),
    ("@classLabel true", "1,2:a\n3,4\n"),
    ("@classLabel true", "1,2:5,6\n3,4:7,8\n"),
], ids=["univariate-declared", "univariate-undeclared", "bivariate-undeclared"])
def test_a_ts_series_without_its_label_is_named_not_read_with_its_values_as_the_label(tmp_path, header, body):
    """A bivariate file whose labels are missing read as univariate series labelled '5,6', '7,8' (silently), and a
    univariate line without a label said 'dimensions have different lengths []'."""
    f = write(tmp_path / "d.ts", f"{header}\n@data\n{body}")
    with pytest.raises(ValueError, match=r"d\.ts:\d: no class label after the values"):
        read_ts(f)


def test_series_of_another_width_than_the_run_are_refused_naming_the_file(tmp_path):
    """`s2l evaluate`/`predict` of a univariate run on a bivariate file said only 'inputs have 2 features, config
    says 1', naming neither the file nor that it is the series' dimensions."""
    meta = {"kind": "series", "labels": ["a", "b"], "vocab": None, "input_size": 1, "max_len": 64}
    f = write(tmp_path / "d.ts", "@classLabel true a b\n@data\n1,2:5,6:a\n3,4:7,8:b\n")
    message = r"d\.ts holds series of 2 dimensions; this run was trained on 1$"
    with pytest.raises(ValueError, match=message):
        read_labelled(f, meta)
    with pytest.raises(ValueError, match=message):
        read_unlabelled(str(f), None, meta)


def test_ts_labels_declared_in_the_header_are_read(tmp_path):
    series, labels, declared = read_ts(write(tmp_path / "d.ts", TS.format(header="@classLabel TRUE a b", label="b")))
    assert labels == ["a", "b"] and declared == ("a", "b")
    np.testing.assert_array_equal(series[1], np.array([[3], [4]], np.float32))


def _run_dir(path, config: ClassifierConfig, meta: dict):
    """A run directory as `s2l train` leaves it: model.safetensors (weights + config) and meta.json."""
    path.mkdir()
    x = jnp.zeros((1, 2), jnp.int32) if config.vocab_size else jnp.zeros((1, 2, config.input_size))
    save_weights(path / "model.safetensors", SequenceClassifier(config).init(jax.random.key(0), x)["params"], config)
    (path / "meta.json").write_text(json.dumps(meta))
    return path


@pytest.mark.parametrize("meta, message", [
    ({"kind": "text", "labels": ["a", "b", "c"], "vocab": ["<pad>", "<unk>", "good", "bad"]},
     "3 labels for the model's 4 outputs"),
    ({"kind": "text", "labels": ["a", "b", "c", "d"], "vocab": ["<pad>", "<unk>", "good"]},
     "a vocabulary of 3 words for the model's 4 embedding rows"),
    ({"kind": "series", "labels": ["a", "b", "c", "d"], "vocab": None, "input_size": 1}, "series data for a model of"),
    ({"kind": "text"}, "meta.json is not an s2l run's meta.json: it lacks a list of 'labels'"),
    ("{\"labels\": ", "meta.json is not readable JSON (truncated or corrupt?)"),
], ids=["labels", "vocab", "kind", "no-labels", "truncated"])
def test_a_meta_json_that_does_not_describe_the_model_is_refused_naming_both(tmp_path, capsys, meta, message):
    """A meta.json of another run beside model.safetensors: `s2l evaluate` reported metrics of mislabelled outputs
    and `s2l predict` died with an IndexError traceback; a corrupt one said only 'Expecting value'."""
    run = _run_dir(tmp_path / "run", ClassifierConfig(vocab_size=4, embedding_dim=3, hidden_size=2, num_classes=4),
                   {"kind": "text", "labels": list("abcd"), "vocab": ["<pad>", "<unk>", "good", "bad"]})
    assert main(["predict", str(run), "--data", str(write(tmp_path / "t.csv", "text,label\ngood,a\n"))]) == 0
    (run / "meta.json").write_text(meta if isinstance(meta, str) else json.dumps(meta))
    capsys.readouterr()
    for command in (["predict", str(run), "--data", str(tmp_path / "t.csv")],
                    ["evaluate", str(run), "--data", str(tmp_path / "t.csv")]):
        assert main(command) == 2
        err = capsys.readouterr().err
        assert message in err and len(err.splitlines()) == 1, err
