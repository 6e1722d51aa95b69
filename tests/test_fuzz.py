"""Property-based parity: random recurrent configurations and inputs, each compared with torch.

CI runs the fast profile (bounded examples); `HYPOTHESIS_PROFILE=long python -m pytest tests/test_fuzz.py` runs
>= 2,000 cases. A failure prints the falsifying example and `@reproduce_failure` seed.
"""

import json
import os

import jax
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from oracle import compare_recurrent

from s2l_jax import CELLS

settings.register_profile("ci", max_examples=12, deadline=None, print_blob=True,
                          suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("long", max_examples=2000, deadline=None, print_blob=True,
                          suppress_health_check=[HealthCheck.too_slow])
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


@st.composite
def configs(draw):
    cell = draw(st.sampled_from(CELLS))
    hidden = draw(st.integers(1, 6))
    batch = draw(st.integers(1, 4))
    total = draw(st.integers(1, 6))
    kind = draw(st.sampled_from(["none", "equal", "different", "ones", "max"]))
    lengths = {
        "none": None,
        "equal": [total] * batch,
        "ones": [1] * batch,
        "max": [total] + [draw(st.integers(1, total)) for _ in range(batch - 1)],
        "different": [draw(st.integers(1, total)) for _ in range(batch)],
    }[kind]
    return dict(
        cell=cell, hidden=hidden, batch=batch, total=total, lengths=lengths,
        layers=draw(st.integers(1, 3)), bidirectional=draw(st.booleans()), bias=draw(st.booleans()),
        batch_first=draw(st.booleans()), with_state=draw(st.booleans()), input_size=draw(st.integers(1, 5)),
        proj_size=draw(st.integers(0, hidden - 1)) if cell == "lstm" and hidden > 1 else 0,
        float64=draw(st.booleans()),
    )


@given(configs(), st.integers(0, 2**31 - 1))
def test_random_configurations_match_torch(cfg, seed):
    torch.manual_seed(seed)
    jax.clear_caches()  # every case compiles for new shapes and JAX keeps each executable (see conftest)
    float64 = cfg.pop("float64")
    with jax.enable_x64(float64):
        diffs = compare_recurrent(**cfg, dtype=torch.float64 if float64 else torch.float32,
                                  tol=1e-10 if float64 else 1e-5)
    if os.environ.get("FUZZ_LOG"):  # the long profile records each case's worst differences
        with open(os.environ["FUZZ_LOG"], "a") as f:
            f.write(json.dumps({"float64": float64, **cfg, "max_diff": max(diffs.values())}) + "\n")
