"""Reading pretrained word vectors: GloVe (no header) and word2vec / fastText (a "count dim" header) text files."""

import numpy as np
import pytest

from s2l_jax.embeddings import read_vectors

VOCAB = ["<pad>", "<unk>", "good", "bad", "film"]


@pytest.mark.parametrize("header", ["", "3 2\n"], ids=["glove", "word2vec"])
def test_vectors_of_vocabulary_words_are_read_and_others_skipped(tmp_path, header):
    f = tmp_path / "v.txt"
    f.write_text(header + "good 0.5 -1\nmovie 7 7\nbad 1e-3 2.5\ngood 9 9\n<pad> 4 4\n")
    vectors, found, _ = read_vectors(f, VOCAB)
    assert found.tolist() == [False, False, True, True, False]  # the first "good" wins; <pad> is never filled
    np.testing.assert_array_equal(vectors[2:4], np.array([[0.5, -1], [1e-3, 2.5]], np.float32))
    assert vectors.dtype == np.float32 and not vectors[[0, 1, 4]].any()


def test_tab_separated_vectors_are_read_like_space_separated_ones(tmp_path):
    f = tmp_path / "v.tsv"
    f.write_text("good\t0.5\t-1\nbad\t1\t2\n")
    vectors, found, _ = read_vectors(f, VOCAB)
    assert found.tolist() == [False, False, True, True, False]
    np.testing.assert_array_equal(vectors[2:4], np.array([[0.5, -1], [1, 2]], np.float32))


@pytest.mark.parametrize("body, message", [
    ("good 1 2\nbad 1\n", ":2: 1 numbers after the word, earlier lines have 2"),
    ("good 1 x\n", ":1: the vector of 'good' is not a list of numbers"),
    ("good 1 nan\n", ":1: the vector of 'good' holds NaN or Inf"),
    ("good\n", ":1: a word and its numbers expected"),
    ("", "holds no word vectors"),
    ("2 2\ngood 1 2 3\nbad 4 5 6\n", ":2: 3 numbers after the word; the header '2 2' says 2"),
    ("2 4\ngood 1 2 3\n", ":2: 3 numbers after the word; the header '2 4' says 4"),
], ids=["ragged", "not-numbers", "nan", "no-numbers", "empty", "header-narrower", "header-wider"])
def test_malformed_vector_files_are_errors_naming_the_line(tmp_path, body, message):
    f = tmp_path / "v.txt"
    f.write_text(body)
    with pytest.raises(ValueError, match=message):
        read_vectors(f, VOCAB)


def test_non_utf8_vector_file_is_an_error(tmp_path):
    f = tmp_path / "v.txt"
    f.write_bytes(b"caf\xe9 1 2\n")
    with pytest.raises(ValueError, match="not UTF-8 text"):
        read_vectors(f, VOCAB)


def test_a_byte_order_mark_does_not_hide_the_first_word(tmp_path):
    f = tmp_path / "v.txt"
    f.write_text("\ufeffgood 1 2\nbad 3 4\n", encoding="utf-8")  # as Windows editors save UTF-8
    vectors, found, _ = read_vectors(f, VOCAB)
    assert found.tolist() == [False, False, True, True, False] and vectors[2].tolist() == [1, 2]


@pytest.mark.parametrize("header", ["", "7 2\n"], ids=["glove", "word2vec"])
def test_a_cased_entry_fills_a_word_the_file_lacks_in_lowercase_and_an_exact_entry_wins(tmp_path, header):
    """The tokenizer lowercases; fastText / word2vec files are cased ("Paris", not "paris")."""
    f = tmp_path / "v.txt"
    f.write_text(header + "Film 1 1\nGOOD 2 2\ngood 3 3\nFILM 4 4\nBad 5 5\nbad 6 6\nBAD 7 7\n")
    vectors, found, cased = read_vectors(f, VOCAB)
    assert found.tolist() == [False, False, True, True, True]
    assert cased == {4: "Film"}  # only "film" has no lowercase entry
    # good, bad: their exact entries, wherever they stand; film: its first cased entry (the most frequent)
    np.testing.assert_array_equal(vectors[2:], np.array([[3, 3], [6, 6], [1, 1]], np.float32))
