import gc
import os
import tempfile

import jax
import pytest
import torch

# torch's oneDNN LSTM path is up to 40x slower on some CPU shapes here; results agree to < 1e-8.
torch.backends.mkldnn.enabled = False
torch.set_num_threads(2)

# Tests build the same small models many times (each fit/make_steps is a new jitted function): a per-session
# persistent compilation cache turns those repeat XLA compiles into cache hits.
jax.config.update("jax_compilation_cache_dir", tempfile.mkdtemp(prefix="s2l-test-xla-cache-"))
jax.config.update("jax_persistent_cache_min_compile_time_secs", 0)
# `s2l` run as a subprocess caches in a directory of its own (the CLI's cache evicts, this one does not), never
# in the user's ~/.cache.
os.environ["S2L_COMPILE_CACHE"] = tempfile.mkdtemp(prefix="s2l-test-cli-cache-")


@pytest.fixture(autouse=True)
def _seed_torch():
    torch.manual_seed(0)


def memory_map_count() -> int:
    """How many memory mappings this process holds (0 where /proc is missing)."""
    try:
        with open("/proc/self/maps") as f:
            return sum(1 for _ in f)
    except OSError:
        return 0


def mappings_left_per_call(call) -> int:
    """Memory mappings one more `call()` leaves behind, measured after a first call has compiled everything."""
    counts = []
    for _ in range(3):
        call()
        gc.collect()
        counts.append(memory_map_count())
    return counts[2] - counts[1]


@pytest.fixture(autouse=True)
def _drop_compiled_executables():
    """JAX keeps the executable of every eager scan for the life of the process, each with its own memory
    mappings; the suite's thousands of them reached vm.max_map_count (65530) and the next mmap segfaulted the
    run in test_train. Dropping them past a third of that costs a few cache reloads, not a recompile per test."""
    yield
    if memory_map_count() > 20_000:
        jax.clear_caches()
