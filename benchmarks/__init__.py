"""Benchmarks: s2l_jax vs torch (eager, mkldnn on/off, torch.compile) and flax.linen; `python -m benchmarks.run`."""
