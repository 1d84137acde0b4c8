"""Task2Vec's parameters and their defaults, its error class and the precision rule.

One place for the defaults: the measure's ``__init__`` signature and the embedding functions
both read :data:`DEFAULTS` (the meaning of every parameter is in docs/measures.md).
"""

from __future__ import annotations

import functools
from typing import Any

import dsim

DEFAULTS: dict[str, Any] = {
    "probe": "resnet18",
    "probe_weights": "imagenet",
    "image_size": 64,
    "task2vec_skip_layers": 6,
    "task2vec_fisher_samples": 2000,
    "task2vec_batch_size": 64,
    "task2vec_epochs": 10,
    "task2vec_lr": 4e-4,
    "task2vec_weight_decay": 1e-4,
    "task2vec_bn": "train",
    "task2vec_distance": "symmetric",
    "task2vec_alpha": 0.15,
    "task2vec_protocol": "single",
    "task2vec_subsets": 100,
    "task2vec_subset_fraction": 0.01,
    "task2vec_subset_min": 100,
    "task2vec_pairs": 5,
    "task2vec_label_draws": 4,
    "task2vec_threads": 0,
    "task2vec_precision": "auto",
    "task2vec_method": "montecarlo",
    "task2vec_variational_samples": 10000,
    "task2vec_variational_beta": 1e-7,
    "task2vec_variational_lr": 1e-2,
}


class Task2VecError(dsim.DsimError):
    """A Task2Vec option that cannot work: stops the whole measure (``measure_wide``)."""

    measure_wide = True


@functools.lru_cache(maxsize=1)
def _cpu_has_bf16() -> bool:
    """True where the CPU executes bfloat16 natively (AVX512-BF16 or AMX): there oneDNN's bf16
    convolutions are faster than float32; elsewhere they are emulated and slower."""
    try:
        with open("/proc/cpuinfo") as f:
            flags = f.read()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def resolve_precision(value: Any, device) -> str:
    """``task2vec_precision``: ``fp32``, ``bf16`` (autocast of the Fisher passes; the gradients
    are accumulated in float32) or ``auto`` (bf16 on a CUDA GPU that supports it and on a CPU
    with native bf16, else fp32). The resolved value is part of the cache key."""
    v = str(value)
    if v not in ("auto", "fp32", "bf16"):
        raise Task2VecError(f"task2vec_precision={v!r}: use 'auto', 'fp32' or 'bf16'")
    if v != "auto":
        return v
    import torch

    dev = torch.device(device) if device is not None else torch.device("cpu")
    if dev.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp32"
    if dev.type == "cpu":
        return "bf16" if _cpu_has_bf16() else "fp32"
    return "fp32"
