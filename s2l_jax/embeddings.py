"""Pretrained word vectors (GloVe, word2vec or fastText text format) as an embedding's initial rows.

One word and its numbers per line, separated by spaces (or tabs); a first line of two whole numbers
(word2vec / fastText's "count dim" header) is skipped. Only the vocabulary's words are parsed, so large files
stream through quickly. The vocabulary is lowercased (the tokenizer's); a word the file holds only cased
(fastText's and word2vec's "Paris") takes its first cased entry, the most frequent one in such files.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np


def read_vectors(path: str | Path, vocab: list[str]) -> tuple[np.ndarray, np.ndarray, dict[int, str]]:
    """(vectors `(len(vocab), dim)` float32, found `(len(vocab),)` bool, cased): each vocabulary word's vector
    where the file has it. A word's own entry wins wherever it stands; without one, the first entry that
    lowercases to it (`.lower()`, as the tokenizer's) is used, and `cased` maps such rows to that entry's word.
    The first of duplicate entries counts. Index 0 (padding) is never filled."""
    path = Path(path)
    index = {w: i for i, w in enumerate(vocab) if i > 0}
    vectors: np.ndarray | None = None
    found = np.zeros(len(vocab), bool)  # filled from the word's own entry
    cased: dict[int, str] = {}  # rows filled from a cased entry, until the word's own entry turns up
    dim, header_line = None, None
    try:
        with open(path, encoding="utf-8-sig") as f:  # a byte-order mark would hide the first word
            for number, line in enumerate(f, 1):
                line = line.rstrip("\r\n")
                if not line.strip():
                    continue
                if dim is None:
                    parts = line.split()
                    header = number == 1 and len(parts) == 2 and all(p.isdigit() for p in parts)
                    dim = int(parts[1]) if header else len(parts) - 1  # word2vec / fastText header: "count dim"
                    if dim < 1:
                        raise ValueError(f"{path}:{number}: a word and its numbers expected, got {line[:40]!r}")
                    vectors = np.zeros((len(vocab), dim), np.float32)
                    if header:
                        header_line = line
                        continue
                elif header_line is not None:  # a wider line would be read as a word "w x1" that matches nothing
                    width = len(line.split()) - 1
                    if width != dim:
                        raise ValueError(f"{path}:{number}: {width} numbers after the word; the header "
                                         f"{header_line!r} says {dim}")
                    header_line = None
                word, *values = line.rsplit(None, dim)  # spaces or tabs; a word may hold spaces (GloVe 840B)
                if len(values) != dim or not word:
                    raise ValueError(f"{path}:{number}: {len(values)} numbers after the word, earlier lines have {dim}")
                i = index.get(word)
                if i is None:
                    i = index.get(word.lower())
                    if i is None or found[i] or i in cased:
                        continue
                    cased[i] = word
                elif found[i]:
                    continue
                else:
                    found[i] = True
                    cased.pop(i, None)
                try:
                    vectors[i] = np.array(values, np.float32)
                except ValueError:
                    raise ValueError(f"{path}:{number}: the vector of {word!r} is not a list of numbers") from None
                if not np.isfinite(vectors[i]).all():
                    raise ValueError(f"{path}:{number}: the vector of {word!r} holds NaN or Inf")
    except UnicodeDecodeError as e:
        raise ValueError(f"{path}: not UTF-8 text ({e.reason} at byte {e.start} of a line)") from None
    if vectors is None:
        raise ValueError(f"{path} holds no word vectors")
    found[list(cased)] = True
    return vectors, found, cased
