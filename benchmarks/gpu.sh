#!/usr/bin/env bash
# The 12-case grid on one GPU in about 5 minutes: s2l_jax (default scan, and s2l_jax_cudnn: ScanOptions(cudnn=True)),
# flax.linen and (when torch sees CUDA) torch eager,
# fp32 everywhere (no TF32); large cases first; workers not started within 4.5 minutes are skipped, the table is
# still written. Writes benchmarks/results/bench_gpu.{json,md,png} and prints the table.
# Needs a CUDA jaxlib (pip install 'jax[cuda12]'); the CPU-only venv of this repo is refused with a clear message.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ -z "${VIRTUAL_ENV:-}" ] && [ -f .venv/bin/activate ]; then . .venv/bin/activate; fi  # an active env wins
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader || true
python - <<'PY'
import sys
import jax
try:
    gpus = jax.devices("gpu")
except RuntimeError as e:
    sys.exit(f"jax has no GPU backend here ({e}); install a CUDA jaxlib, e.g. pip install 'jax[cuda12]'")
print("jax", jax.__version__, gpus)
PY
frameworks="s2l_jax,s2l_jax_cudnn,flax_linen"
if python -c "import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)" 2>/dev/null; then
  frameworks="$frameworks,torch_eager"
else
  echo "warning: this python's torch has no CUDA: the table will have no torch column" >&2
fi
export XLA_PYTHON_CLIENT_PREALLOCATE=false JAX_DEFAULT_MATMUL_PRECISION=highest
timeout 420 python -m benchmarks.run --device gpu --frameworks "$frameworks" --rounds 1 --budget 1 \
  --timeout 90 --max-minutes 4.5 --name bench_gpu
