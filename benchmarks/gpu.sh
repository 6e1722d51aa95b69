#!/usr/bin/env bash
# GPU parity tests (~1 min), then the 12-case grid on one GPU in about 5 minutes: s2l_jax (default scan, and
# s2l_jax_cudnn: ScanOptions(cudnn=True)), flax.linen and (when torch sees CUDA) torch eager, fp32 everywhere (no
# TF32); large cases first; workers not started within 4.5 minutes are skipped, the table is still written.
# Writes benchmarks/results/gpu_tests.txt and bench_gpu.{json,md,png} and prints the table.
# Needs a CUDA jaxlib (this project's lent GPU machines have one, with torch, flax and optax, in their python3);
# the CPU-only venv of this repo is refused with a clear message.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ -z "${VIRTUAL_ENV:-}" ] && [ -f .venv/bin/activate ]; then . .venv/bin/activate; fi  # an active env wins
py="${PYTHON:-$(command -v python3 || command -v python)}"  # GPU images often have python3 alone
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader || true
"$py" - <<'PY'
import sys
import jax
try:
    gpus = jax.devices("gpu")
except RuntimeError as e:
    sys.exit(f"jax has no GPU backend here ({e}); install a CUDA jaxlib, e.g. pip install 'jax[cuda12]'")
print("jax", jax.__version__, gpus)
PY
frameworks="s2l_jax,s2l_jax_cudnn,flax_linen"
if "$py" -c "import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)" 2>/dev/null; then
  frameworks="$frameworks,torch_eager"
else
  echo "warning: this python's torch has no CUDA: the table will have no torch column" >&2
fi
export XLA_PYTHON_CLIENT_PREALLOCATE=false JAX_DEFAULT_MATMUL_PRECISION=highest
# Parity on the GPU first (the cuDNN kernel's GPU-only tests, the seed models with and without lengths; ~40 s on
# a CPU), kept beside the table; a failure is reported and the grid still runs.
mkdir -p benchmarks/results
timeout 150 "$py" -m pytest -q -p no:cacheprovider tests/test_cudnn.py \
  tests/test_model.py::test_seed_models_convert_from_user_classes_and_match \
  tests/test_model.py::test_classifier_with_lengths_matches_packed_torch 2>&1 | tail -20 \
  | tee benchmarks/results/gpu_tests.txt || echo "GPU parity tests failed or timed out (benchmarks/results/gpu_tests.txt)"
timeout 420 "$py" -m benchmarks.run --device gpu --frameworks "$frameworks" --rounds 1 --budget 1 \
  --timeout 90 --max-minutes 4.5 --name bench_gpu
