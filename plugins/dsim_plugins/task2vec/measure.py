"""The ``task2vec`` measure: parameters, cache config, run-time estimate, and the dataset
representation (one embedding, or the cats-scans protocol's 100 subset embeddings)."""

from __future__ import annotations

import math
from typing import Any

import dsim

from .distance import asymmetric_distance, symmetric_distance
from .fisher import task2vec_embedding
from .probe import _Probe, _set_bn
from .settings import DEFAULTS, Task2VecError, resolve_precision

np = dsim.lazy_module("numpy")  # imported on first use: the listings need no numpy


class Task2Vec(dsim.Measure):
    name = "task2vec"
    description = (
        "Task2Vec: cosine distance of diagonal Monte-Carlo Fisher embeddings of a probe "
        "network (Achille et al. 2019)"
    )
    kind = "distance"
    needs = "images"
    param_ranges = {
        "image_size": dsim.Range(int, 8, 4096),
        "task2vec_skip_layers": dsim.Range(int, 0),
        "task2vec_fisher_samples": dsim.Range(int, 2),
        "task2vec_batch_size": dsim.Range(int, 1),
        "task2vec_epochs": dsim.Range(int, 0),
        "task2vec_lr": dsim.Range(float, 0, min_open=True),
        "task2vec_weight_decay": dsim.Range(float, 0),
        "task2vec_alpha": dsim.Range(float, 0),
        "task2vec_subsets": dsim.Range(int, 1),
        "task2vec_subset_fraction": dsim.Range(float, 0, 1, min_open=True),
        "task2vec_subset_min": dsim.Range(int, 2),
        "task2vec_pairs": dsim.Range(int, 1),
        "task2vec_label_draws": dsim.Range(int, 1),
        "task2vec_threads": dsim.Range(int, 0),
        "task2vec_variational_samples": dsim.Range(int, 1),
        "task2vec_variational_beta": dsim.Range(float, 0),
        "task2vec_variational_lr": dsim.Range(float, 0, min_open=True),
    }

    def __init__(
        self,
        probe=DEFAULTS["probe"],
        probe_weights=DEFAULTS["probe_weights"],
        image_size=DEFAULTS["image_size"],
        task2vec_skip_layers=DEFAULTS["task2vec_skip_layers"],
        task2vec_fisher_samples=DEFAULTS["task2vec_fisher_samples"],
        task2vec_batch_size=DEFAULTS["task2vec_batch_size"],
        task2vec_epochs=DEFAULTS["task2vec_epochs"],
        task2vec_lr=DEFAULTS["task2vec_lr"],
        task2vec_weight_decay=DEFAULTS["task2vec_weight_decay"],
        task2vec_bn=DEFAULTS["task2vec_bn"],
        task2vec_distance=DEFAULTS["task2vec_distance"],
        task2vec_alpha=DEFAULTS["task2vec_alpha"],
        task2vec_protocol=DEFAULTS["task2vec_protocol"],
        task2vec_subsets=DEFAULTS["task2vec_subsets"],
        task2vec_subset_fraction=DEFAULTS["task2vec_subset_fraction"],
        task2vec_subset_min=DEFAULTS["task2vec_subset_min"],
        task2vec_pairs=DEFAULTS["task2vec_pairs"],
        task2vec_label_draws=DEFAULTS["task2vec_label_draws"],
        task2vec_threads=DEFAULTS["task2vec_threads"],
        task2vec_precision=DEFAULTS["task2vec_precision"],
        task2vec_method=DEFAULTS["task2vec_method"],
        task2vec_variational_samples=DEFAULTS["task2vec_variational_samples"],
        task2vec_variational_beta=DEFAULTS["task2vec_variational_beta"],
        task2vec_variational_lr=DEFAULTS["task2vec_variational_lr"],
    ):
        self.probe = probe
        self.probe_weights = probe_weights
        self.image_size = image_size
        self.task2vec_skip_layers = task2vec_skip_layers
        self.task2vec_fisher_samples = task2vec_fisher_samples
        self.task2vec_batch_size = task2vec_batch_size
        self.task2vec_epochs = task2vec_epochs
        self.task2vec_lr = task2vec_lr
        self.task2vec_weight_decay = task2vec_weight_decay
        self.task2vec_bn = task2vec_bn
        self.task2vec_distance = task2vec_distance
        self.task2vec_alpha = task2vec_alpha
        self.task2vec_protocol = task2vec_protocol
        self.task2vec_subsets = task2vec_subsets
        self.task2vec_subset_fraction = task2vec_subset_fraction
        self.task2vec_subset_min = task2vec_subset_min
        self.task2vec_pairs = task2vec_pairs
        self.task2vec_label_draws = task2vec_label_draws
        self.task2vec_threads = task2vec_threads
        self.task2vec_precision = task2vec_precision
        self.task2vec_method = task2vec_method
        self.task2vec_variational_samples = task2vec_variational_samples
        self.task2vec_variational_beta = task2vec_variational_beta
        self.task2vec_variational_lr = task2vec_variational_lr

    def config(self, ctx):
        o = self.get_params()
        cfg = {
            k: o[k]
            for k in (
                "probe",
                "image_size",
                "task2vec_skip_layers",
                "task2vec_fisher_samples",
                "task2vec_batch_size",
                "task2vec_epochs",
                "task2vec_lr",
                "task2vec_weight_decay",
                "task2vec_bn",
                "task2vec_protocol",
                "task2vec_label_draws",
            )
        }
        if o["task2vec_protocol"] == "cats-scans":
            cfg.update(
                {k: o[k] for k in ("task2vec_subsets", "task2vec_subset_fraction", "task2vec_subset_min")}
            )
        cfg["max_samples"] = ctx.max_samples
        cfg["seed"] = ctx.seed
        cfg["method"] = str(o["task2vec_method"])
        if cfg["method"] == "variational":
            cfg.update(
                {
                    k: o[k]
                    for k in (
                        "task2vec_variational_samples",
                        "task2vec_variational_beta",
                        "task2vec_variational_lr",
                    )
                }
            )
            cfg["precision"] = "fp32"
        else:
            cfg["precision"] = resolve_precision(o["task2vec_precision"], ctx.torch_device())
        cfg["version"] = 2
        return cfg

    def fingerprints(self, ctx):
        return {"probe": self._weights_id(ctx)}

    def _weights_id(self, ctx) -> str:
        # the probe's weights id does not depend on the head size: build a 2-class probe once
        key = (self.probe, str(self.probe_weights), ctx.seed)
        cache = self.__dict__.setdefault("_wid", {})
        if key not in cache:
            cache[key] = self._probe(ctx, 2).dsim_weights_id
        return cache[key]

    def estimate_seconds(self, n_source_images, n_target_images, ctx) -> float | None:
        """Seconds to represent the sources (and the target), from a calibration: one forward
        pass of the probe's body on a batch and one Fisher step (forward + ``label_draws``
        backward passes) timed once per configuration, scaled by the batches each dataset
        needs (the core leaves out datasets whose representation is cached; 0 images = none)."""
        import torch

        o = self.get_params()
        bs, size, skip = int(o["task2vec_batch_size"]), int(o["image_size"]), int(o["task2vec_skip_layers"])
        variational = str(o["task2vec_method"]) == "variational"
        kd = 1 if variational else max(1, int(o["task2vec_label_draws"]))
        n_batches = max(
            1, int(o["task2vec_variational_samples" if variational else "task2vec_fisher_samples"]) // bs
        )
        key = (
            o["probe"],
            str(o["probe_weights"]),
            size,
            skip,
            bs,
            kd,
            str(ctx.torch_device()),
            str(o["task2vec_precision"]),
            int(o["task2vec_threads"] or 0),
            torch.get_num_threads(),
        )
        cal = self.__dict__.setdefault("_calibration", {})
        if key not in cal:
            try:
                cal[key] = self._calibrate(ctx, o, bs, size, skip, kd)
            except Exception:  # an estimate must never stop the work
                return None
        t_body, t_step = cal[key]
        if variational:
            t_step *= 1.5  # a noise convolution beside every convolution, its backward too (rough)
        n_fwd = math.ceil(n_batches / kd)

        def one(n):
            if o["task2vec_protocol"] == "cats-scans":
                m = min(
                    n, max(int(o["task2vec_subset_min"]), math.ceil(float(o["task2vec_subset_fraction"]) * n))
                )
                return int(o["task2vec_subsets"]) * (math.ceil(m / bs) * t_body + n_fwd * t_step)
            return math.ceil(n / bs) * t_body + n_fwd * t_step

        cap = ctx.max_samples
        sizes = [
            min(int(n), int(cap)) if cap else int(n) for n in list(n_source_images) + [n_target_images] if n
        ]
        return float(sum(one(n) for n in sizes)) if sizes else None

    def _calibrate(self, ctx, o, bs, size, skip, kd):
        import time

        import torch
        import torch.nn.functional as F

        threads = int(o["task2vec_threads"] or 0)
        before = torch.get_num_threads()
        if threads > 0:
            torch.set_num_threads(threads)
        try:
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(0)
                device = ctx.torch_device()
                model = self._probe(ctx, 2).to(device)
                probe = _Probe(model, skip)
                _set_bn(model, str(o["task2vec_bn"]))
                for p in model.parameters():
                    p.requires_grad_(False)
                x = torch.randn(bs, 3, size, size, device=device)
                with torch.inference_mode():
                    probe.forward_from(x, 0, len(probe.layers) - 1)  # warm-up
                    t0 = time.perf_counter()
                    h = probe.forward_from(x, 0, skip) if skip else x
                    probe.forward_from(h, skip, len(probe.layers) - 1)
                    t_body = time.perf_counter() - t0
                h = h.clone()
                for p in probe.weights:
                    p.requires_grad_(True)

                prec = resolve_precision(o["task2vec_precision"], device)

                def step(k):
                    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=prec == "bf16"):
                        out = probe.forward_from(h, skip).float()
                    y = torch.zeros(bs, dtype=torch.long, device=device)
                    for d in range(k):
                        torch.autograd.grad(F.cross_entropy(out, y), probe.weights, retain_graph=d < k - 1)

                step(1)  # warm-up
                t0 = time.perf_counter()
                step(kd)
                t_step = time.perf_counter() - t0
        finally:
            torch.set_num_threads(before)
        return t_body, t_step

    def _probe(self, ctx, num_classes: int):
        o = self.get_params()
        return dsim.create_backbone(
            o["probe"], weights=str(o["probe_weights"]), num_classes=num_classes, in_chans=3, seed=ctx.seed
        )

    def _embed(self, data: dsim.ImageSet, ctx, seed: int, desc: str = "") -> dict[str, Any]:

        k = data.num_classes if data.multilabel else len(np.unique(data.labels))
        model = self._probe(ctx, max(k, 2))

        def prog(d, i, t):
            return ctx.progress(f"{d}{desc}", i, t)

        return task2vec_embedding(
            data.images,
            data.labels,
            model,
            opts=self.get_params(),
            seed=seed,
            device=ctx.torch_device(),
            progress=prog,
        )

    def represent(self, data, ctx):
        import torch

        if not isinstance(data, dsim.ImageSet):
            raise dsim.DsimError(f"task2vec needs images of {getattr(data, 'name', data)!r}")
        o = self.get_params()
        max_samples = ctx.max_samples
        if max_samples and len(data) > int(max_samples):
            data = data.subsample(int(max_samples), seed=ctx.seed)
        if data.multilabel:
            pos = data.class_counts()
            if not ((pos > 0) & (pos < len(data))).any():
                raise dsim.DsimError(
                    f"task2vec: dataset {data.name!r} has no label with positive and negative images"
                )
        elif len(np.unique(data.labels)) < 2:
            raise dsim.DsimError(f"task2vec: dataset {data.name!r} has fewer than two classes")
        protocol = o["task2vec_protocol"]
        with torch.random.fork_rng(devices=[]):
            if protocol == "single":
                e = self._embed(data, ctx, ctx.seed)
                arrays = {"hessian": e["hessian"], "scale": e["scale"]}
                meta = {
                    "names": e["names"],
                    "sizes": e["sizes"],
                    "train_error": e["train_error"],
                    "n": len(data),
                }
            elif protocol == "cats-scans":
                n_sub = int(o["task2vec_subsets"])
                m = max(
                    int(o["task2vec_subset_min"]),
                    int(math.ceil(float(o["task2vec_subset_fraction"]) * len(data))),
                )
                m = min(m, len(data))
                hs, errs, scales = [], [], []
                for i in range(n_sub):
                    sub = data.subsample(m, seed=ctx.seed * 1000003 + i) if m < len(data) else data
                    e = self._embed(sub, ctx, ctx.seed + i, desc=f" (subset {i + 1}/{n_sub})")
                    hs.append(e["hessian"])
                    scales.append(e["scale"])
                    errs.append(e["train_error"])
                arrays = {
                    "hessian": np.mean(hs, axis=0),
                    "hessians": np.stack(hs),
                    "scale": np.mean(scales, axis=0),
                }
                meta = {
                    "names": e["names"],
                    "sizes": e["sizes"],
                    "train_error": float(np.mean(errs)),
                    "n": len(data),
                    "subset_size": m,
                }
            else:
                raise Task2VecError(f"task2vec_protocol={protocol!r}: use 'single' or 'cats-scans'")
        return self.representation(data if len(data) else data, ctx, meta=meta, arrays=arrays)

    def compare(self, source, target, ctx):
        o = self.get_params()
        kind = o["task2vec_distance"]
        if kind not in ("symmetric", "asymmetric"):
            raise Task2VecError(f"task2vec_distance={kind!r}: use 'symmetric' or 'asymmetric'")
        if o["task2vec_protocol"] == "cats-scans" and "hessians" in source.arrays:
            hs, ht = source.arrays["hessians"], target.arrays["hessians"]
            rng = np.random.default_rng([int(ctx.seed), int(source.key[:8], 16), int(target.key[:8], 16)])
            pairs = [(rng.integers(len(hs)), rng.integers(len(ht))) for _ in range(int(o["task2vec_pairs"]))]
            vals = [self._dist(hs[i], ht[j], kind, o, trivial=source.arrays.get("scale")) for i, j in pairs]
            return float(np.mean(vals))
        return self._dist(
            source.arrays["hessian"], target.arrays["hessian"], kind, o, trivial=source.arrays.get("scale")
        )

    @staticmethod
    def _dist(a, b, kind, o, trivial=None) -> float:
        if kind == "symmetric":
            return symmetric_distance(a, b)
        return asymmetric_distance(a, b, float(o["task2vec_alpha"]), trivial)
