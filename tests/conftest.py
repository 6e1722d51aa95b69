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


@pytest.fixture(autouse=True)
def _seed_torch():
    torch.manual_seed(0)
