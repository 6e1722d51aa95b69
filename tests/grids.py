"""Parameter grids whose full cross product runs under `-m slow`; the default run keeps a covering band."""

from __future__ import annotations

from collections.abc import Sequence

import pytest


def banded(rows: Sequence, cols: Sequence, every: int) -> list:
    """`rows x cols` as pytest params (a row or column that is a tuple is spread into several arguments). The
    default run keeps the cells with `(i - j) % every == 0`, which holds every row and every column at least once
    while both have `every` or more entries; the others are marked slow."""
    assert len(rows) >= every and len(cols) >= every, "a row or column would never run by default"
    out = []
    for i, row in enumerate(rows):
        for j, col in enumerate(cols):
            values = (*(row if isinstance(row, tuple) else (row,)), *(col if isinstance(col, tuple) else (col,)))
            marks = () if (i - j) % every == 0 else (pytest.mark.slow,)
            out.append(pytest.param(*values, marks=marks))
    return out
