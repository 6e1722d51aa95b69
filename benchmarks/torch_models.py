"""The seed's torch models (parity.torch_models.SEED_MODELS; for GRU cases the same architecture through
parity.torch_models.TorchSequenceClassifier) as timed steps: eager (oneDNN on or off) or torch.compile."""

from __future__ import annotations

import time
from collections.abc import Callable

import torch
import torch.nn.functional as F

from benchmarks.cases import CLASSES, VOCAB, Case, batch_arrays


def build(framework: str, case: Case, *, device: str = "cpu", options: dict | None = None,
          threads: int = 2) -> tuple[Callable[[], None], dict]:
    """A no-argument step to time and facts; "torch_compile" reports the first call's time as compile time."""
    from parity.torch_models import SEED_MODELS, TorchSequenceClassifier
    from s2l_jax import PRESETS

    del options
    torch.set_num_threads(threads)
    torch.backends.mkldnn.enabled = framework != "torch_eager_nomkldnn"
    dev = torch.device("cuda" if device == "gpu" else "cpu")
    if dev.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False
    d = case.dims
    torch.manual_seed(0)
    if case.cell == "lstm":
        model = SEED_MODELS[case.model](VOCAB, d["embed"], d["hidden"], CLASSES).to(dev)
    else:
        config = PRESETS[case.model].replace(vocab_size=VOCAB, embedding_dim=d["embed"], hidden_size=d["hidden"],
                                             num_classes=CLASSES, cell=case.cell)
        model = TorchSequenceClassifier(config).to(dev)
    tokens, labels = (torch.as_tensor(a, dtype=torch.int64, device=dev) for a in batch_arrays(case))
    forward = torch.compile(model) if framework == "torch_compile" else model
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)

    if case.mode == "infer":
        model.eval()

        def step() -> None:
            with torch.inference_mode():
                forward(tokens)
            sync()
    else:
        model.train()
        opt = torch.optim.Adam(model.parameters(), lr=1e-3)

        def step() -> None:
            opt.zero_grad(set_to_none=True)
            F.cross_entropy(forward(tokens), labels).backward()
            opt.step()
            sync()

    info: dict = {"mkldnn": torch.backends.mkldnn.enabled, "torch_threads": torch.get_num_threads()}
    if framework == "torch_compile":
        t0 = time.perf_counter()
        step()
        info["compile_s"] = time.perf_counter() - t0
    return step, info
