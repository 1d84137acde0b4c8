"""Do dsim's transferability score functions compute what the reference code computes?

For a set of cases (features of real networks on real images of the shared data sets at a few
sizes, PCA of pixels with a real source classifier, and synthetic separable / non-separable
features), this computes every score of ``dsim_plugins.score_functions.SCORES`` and the reference
implementation's value on the SAME float64 arrays, and prints one markdown table: per score, the
largest absolute and relative difference over the cases and the Spearman correlation of the two
over the cases.

References (imported from ``--reference-dir`` at run time, never copied into dsim): the study of
Juodelyte et al. 2024 (``transferability-in-medical-imaging/src/metrics.py``: LogME, LEEP, NLEEP,
SFDA, PARC, NCTI, LP, FU) and the Transfer-Learning-Library (``tllib/ranking``: LogME, LEEP, NCE,
H-score). ``DIR`` holds the clones, named as on GitHub or ``owner+name``::

    git clone https://github.com/DovileDo/transferability-in-medical-imaging DIR/...
    git clone https://github.com/thuml/Transfer-Learning-Library DIR/...
    pip install --target DIR/deps --no-deps pytorch-metric-learning   # the study's FU needs it
    PYTHONPATH=src:plugins python benchmarks/score_agreement.py --reference-dir DIR

``DIR/deps`` is put on the path when it exists; numba (TLlib's LogME) is replaced by a no-op
decorator when it is not installed. Without ``--reference-dir`` the table holds dsim's values.
Runs on CPU in a few minutes (``--quick``: fewer, smaller cases).
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import io
import sys
import time
import types
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

import dsim
from dsim_plugins import score_functions as sf


@dataclass
class Case:
    name: str
    labels: np.ndarray
    features: np.ndarray | None = None
    logits: np.ndarray | None = None
    model: object = None  # for fu: a network mapping images to embeddings
    images: object = None  # (n, C, H, W) float tensor
    layers: tuple[str, str] = ("conv1", "layer1.0.conv1")
    extra: dict = field(default_factory=dict)


# --------------------------------------------------------------------------------------------
# cases
# --------------------------------------------------------------------------------------------


def _data(file: str, n: int, seed: int = 0) -> dsim.ImageSet:
    path = dsim.find_data_file(file)
    if path is None:
        raise SystemExit(f"{file} not found in DSIM_DATA_DIR (point it at the shared data folder)")
    return dsim.load_dataset(str(path), max_samples=n, seed=seed)


def _grey(images: np.ndarray, size: int = 28) -> np.ndarray:
    x = dsim.to_tensor(images, size=size, channels=1, normalize=False)
    return x.reshape(len(x), -1).numpy().astype(np.float64)


def _network_outputs(arch: str, data: dsim.ImageSet, size: int, heads: int, seed: int):
    """Penultimate features and logits of a seeded random-init network on the images."""
    import torch

    model = dsim.create_backbone(arch, weights="random", num_classes=heads, seed=seed).eval()
    x = dsim.to_tensor(data.images, size=size, channels=3)
    with torch.inference_mode():
        f = model.forward_head(model.forward_features(x), pre_logits=True)
        z = model.get_classifier()(f)
    return f.double().numpy(), z.double().numpy()


def feature_cases(quick: bool) -> list[Case]:
    from sklearn.decomposition import PCA
    from sklearn.linear_model import LogisticRegression

    scale = 0.5 if quick else 1.0
    sizes = {k: max(60, int(v * scale)) for k, v in {"small": 120, "mid": 300, "large": 500}.items()}
    cases = []
    # a real source classifier: logistic regression on MNIST pixels, applied to target pixels
    mnist = _data("mnist_test.npz", 2000)
    source = LogisticRegression(max_iter=300).fit(_grey(mnist.images) / 255.0, mnist.labels)
    for file, n in (("pneumoniamnist.npz", "mid"), ("blood_pbc_28.npz", "large"), ("retinamnist.npz", "mid")):
        d = _data(file, sizes[n])
        px = _grey(d.images)
        feats = PCA(n_components=64, svd_solver="full").fit_transform(px / 255.0)
        cases.append(
            Case(
                f"pixels-pca64/{file.split('.')[0]}/{len(d)}",
                d.labels,
                feats,
                source.decision_function(px / 255.0),
            )
        )
    for arch, size, heads, runs in (
        (
            "resnet18",
            32,
            1000,
            (("pneumoniamnist.npz", "mid"), ("blood_pbc_28.npz", "large"), ("breastmnist.npz", "small")),
        ),
        (
            "smallcnn",
            28,
            10,
            (("pneumoniamnist.npz", "mid"), ("retinamnist.npz", "mid"), ("busi_64.npz", "small")),
        ),
    ):
        for file, n in runs:
            d = _data(file, sizes[n])
            f, z = _network_outputs(arch, d, size, heads, seed=1)
            cases.append(Case(f"{arch}-random/{file.split('.')[0]}/{len(d)}", d.labels, f, z))
    rng = np.random.default_rng(0)
    for n, dim in ((sizes["mid"], 40), (sizes["small"], 80)):
        y = np.repeat(np.arange(3), n // 3)
        centres = rng.normal(0, 3.0, (3, dim))
        f = centres[y] + rng.normal(size=(len(y), dim))
        w = rng.normal(size=(dim, 20)) / np.sqrt(dim)
        cases.append(Case(f"synthetic-separable/{len(y)}x{dim}", y, f, f @ w))
        shuffled = rng.permutation(y)
        cases.append(Case(f"synthetic-shuffled/{len(y)}x{dim}", shuffled, f, f @ w))
    return cases


def fu_cases(quick: bool) -> list[Case]:
    import torch

    n = 60 if quick else 120
    cases = []
    for arch, size, layers, files in (
        (
            "resnet18",
            32,
            ("conv1", "layer1.0.conv1"),
            ("pneumoniamnist.npz", "blood_pbc_28.npz", "breastmnist.npz"),
        ),
        (
            "smallcnn",
            28,
            ("features.0", "features.4"),
            ("pneumoniamnist.npz", "retinamnist.npz", "busi_64.npz"),
        ),
    ):
        for file in files if not quick else files[:2]:
            d = _data(file, n, seed=1)
            torch.manual_seed(0)
            model = dsim.create_backbone(arch, weights="random", num_classes=0, seed=1)
            for m in model.modules():  # timm zero-initialises each block's last BN, which leaves
                if isinstance(m, torch.nn.BatchNorm2d):  # every residual-branch gradient at 0
                    torch.nn.init.ones_(m.weight)
            x = dsim.to_tensor(d.images, size=size, channels=3)
            cases.append(
                Case(
                    f"{arch}-random/{file.split('.')[0]}/{len(d)}",
                    d.labels,
                    model=model,
                    images=x,
                    layers=layers,
                )
            )
    return cases


# --------------------------------------------------------------------------------------------
# references
# --------------------------------------------------------------------------------------------


def _find(root: Path, *names: str) -> Path | None:
    for n in names:
        if (root / n).is_dir():
            return root / n
    return None


def _load(path: Path, name: str):
    spec = importlib.util.spec_from_file_location(name, path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def load_references(root: Path) -> dict[str, object]:
    """The reference modules found under ``root``: ``study`` and ``tllib`` (either may be None)."""
    if (root / "deps").is_dir():
        sys.path.insert(0, str(root / "deps"))
    refs: dict[str, object] = {"study": None, "tllib": None, "notes": []}
    study = _find(root, "transferability-in-medical-imaging", "DovileDo+transferability-in-medical-imaging")
    if study is not None:
        try:
            import pytorch_metric_learning  # noqa: F401
        except ImportError:
            refs["notes"].append("pytorch-metric-learning not installed: no FU reference")
            stub = types.ModuleType("pytorch_metric_learning")
            stub.losses = types.SimpleNamespace()
            sys.modules["pytorch_metric_learning"] = stub
        sys.path.insert(0, str(study / "src"))
        saved = sys.modules.pop("utils", None)
        try:
            refs["study"] = _load(study / "src" / "metrics.py", "reference_study_metrics")
        finally:
            sys.path.remove(str(study / "src"))
            sys.modules.pop("utils", None)
            if saved is not None:
                sys.modules["utils"] = saved
    tl = _find(root, "Transfer-Learning-Library", "thuml+Transfer-Learning-Library")
    if tl is not None:
        try:
            import numba  # noqa: F401
        except ImportError:
            refs["notes"].append("numba not installed: TLlib's LogME runs as plain Python")
            sys.modules["numba"] = types.SimpleNamespace(njit=lambda f: f)
        rank = tl / "tllib" / "ranking"
        refs["tllib"] = types.SimpleNamespace(
            **{m: _load(rank / f"{m}.py", f"reference_tllib_{m}") for m in ("logme", "leep", "nce", "hscore")}
        )
    return refs


def _quiet(fn, *args, **kwargs):
    """Call a reference function with its prints swallowed."""
    with contextlib.redirect_stdout(io.StringIO()):
        return fn(*args, **kwargs)


@dataclass
class Pair:
    """One row of the table: dsim's ``score`` against ``reference(case)`` on the ``only`` cases."""

    score: str
    label: str
    reference: Callable
    note: str
    only: Callable = lambda c: True
    only_label: str = ""


def _full_rank(c: Case) -> bool:
    f = c.features - c.features.mean(0)
    return np.linalg.matrix_rank(f) == f.shape[1]


def _two_classes(c: Case) -> bool:
    return len(np.unique(c.labels)) == 2


def _memo(fn):
    seen: dict[str, object] = {}

    def call(c: Case):
        if c.name not in seen:
            seen[c.name] = fn(c)
        return seen[c.name]

    return call


def reference_pairs(refs) -> list[Pair]:
    """The rows for every reference found, with what explains their differences."""
    st, tl = refs["study"], refs["tllib"]
    out = []
    if st is not None:
        import torch

        def study_nleep(c):
            np.random.seed(0)  # the study leaves the mixture unseeded: its global RNG, seeded as dsim's
            return st.NLEEP(c.features, c.labels, component_ratio=5)

        def study_fu(c):
            loader = torch.utils.data.DataLoader(
                torch.utils.data.TensorDataset(c.images, torch.as_tensor(c.labels)),
                batch_size=len(c.labels) // 6,
                shuffle=False,
            )
            first, second = (c.model.get_submodule(n) for n in c.layers)
            return st.FU_Score(c.model, first, second, loader, "cpu")

        study_parc = _memo(lambda c: st.PARC_Score(c.features, c.labels, ratio=2))
        study_logme = _memo(lambda c: st.LogME_Score(c.features, c.labels))
        study_ncti = _memo(lambda c: _quiet(st.NCTI_Score, c.features, c.labels))
        out += [
            Pair(
                "logme",
                "study LogME_Score",
                study_logme,
                "its fixed-point LogME (thuml/LogME's) leaves (d-k)/2 log alpha out of log det A when the "
                "features have rank k < d (thuml/LogME#23, e.g. n < d), so it is not the evidence there",
            ),
            Pair(
                "logme",
                "study LogME_Score",
                study_logme,
                "stopping rule (0.1 % vs 1 %) and +1e-5 in two denominators",
                _full_rank,
                "of rank d",
            ),
            Pair("leep", "study LEEP", lambda c: st.LEEP(torch.as_tensor(c.logits), c.labels), ""),
            Pair("nleep", "study NLEEP", study_nleep, "mixture seeded alike (the study leaves it unseeded)"),
            Pair(
                "sfda", "study SFDA_Score", lambda c: _quiet(st.SFDA_Score, c.features.copy(), c.labels), ""
            ),
            Pair(
                "parc",
                "study PARC_Score",
                study_parc,
                "dsim ties the within-class label dissimilarities exactly; np.corrcoef of one-hots "
                "leaves ~1e-16 on them, which splits their ties by class when C > 2",
            ),
            Pair("parc", "study PARC_Score", study_parc, "", _two_classes, "with C = 2"),
            Pair(
                "lp",
                "study LP_Score",
                lambda c: st.LP_Score(c.features, c.labels),
                "reference raises for d < 50; dsim then embeds in d dims",
            ),
        ]
        for i, part in enumerate(("seli", "ncc", "vc")):
            out.append(
                Pair(
                    f"ncti.{part}",
                    "study NCTI_Score",
                    lambda c, i=i: study_ncti(c)[i],
                    "reference raises for min(n, d) < 64; dsim then keeps min(n, d) components",
                )
            )
        if hasattr(sys.modules["pytorch_metric_learning"], "__file__"):
            out.append(Pair("fu", "study FU_Score", study_fu, "float32 gradients"))
    if tl is not None:
        tl_hscore = _memo(lambda c: tl.hscore.h_score(c.features, c.labels))
        out += [
            Pair(
                "logme",
                "TLlib log_maximum_evidence",
                lambda c: tl.logme.log_maximum_evidence(c.features, c.labels),
                "both stop after 11 steps or 1 %; TLlib evaluates the evidence at the previous "
                "step's posterior mean, dsim at the final (alpha, beta)",
            ),
            Pair(
                "leep",
                "TLlib log_expected_empirical_prediction",
                lambda c: tl.leep.log_expected_empirical_prediction(sf._softmax(c.logits), c.labels),
                "",
            ),
            Pair(
                "nce",
                "TLlib negative_conditional_entropy",
                lambda c: tl.nce.negative_conditional_entropy(np.argmax(c.logits, 1), c.labels),
                "",
            ),
            Pair(
                "h-score",
                "TLlib h_score",
                tl_hscore,
                "pseudo-inverse cut-off rcond 1e-10 (dsim) vs 1e-15: differs where cov(f) is "
                "rank-deficient (n <= d, dead units), where the H-score degenerates towards C - 1",
            ),
            Pair("h-score", "TLlib h_score", tl_hscore, "", _full_rank, "of rank d"),
        ]
    return out


# --------------------------------------------------------------------------------------------
# dsim's values
# --------------------------------------------------------------------------------------------


_NCTI: dict[str, sf.NCTIParts] = {}


def dsim_value(score: str, c: Case) -> float:
    if score.startswith("ncti."):
        if c.name not in _NCTI:
            _NCTI[c.name] = sf.ncti(c.features, c.labels)
        return getattr(_NCTI[c.name], score.split(".")[1])
    if score == "fu":
        first, second = c.layers
        return sf.fu(c.model, c.images, c.labels, first=first, second=second)
    return float(sf.SCORES[score].compute(c.labels, features=c.features, logits=c.logits))


SCORE_ROWS = [
    "logme",
    "leep",
    "nleep",
    "ncti.seli",
    "ncti.ncc",
    "ncti.vc",
    "parc",
    "sfda",
    "lp",
    "fu",
    "nce",
    "h-score",
    "knn",
]


def _fmt(x: float) -> str:
    if not np.isfinite(x):
        return "nan"
    return f"{x:.2e}" if x != 0 and (abs(x) < 1e-3 or abs(x) >= 1e4) else f"{x:.4g}"


def agreement_table(feats, fus, refs) -> str:
    from scipy.stats import spearmanr

    ours_memo: dict[tuple[str, str], float] = {}
    seconds: dict[str, float] = {}
    lines = [
        "| score | reference | cases | max abs diff | max rel diff | Spearman over cases | dsim range | why they differ |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for pair in reference_pairs(refs):
        cases = [c for c in (fus if pair.score == "fu" else feats) if pair.only(c)]
        ours, theirs, failed = [], [], []
        for c in cases:
            try:
                r = float(pair.reference(c))
            except Exception as exc:  # the reference's own limits (e.g. more components than features)
                failed.append(dsim.one_line(exc, c.name))
                continue
            key = (pair.score, c.name)
            if key not in ours_memo:
                t = time.perf_counter()
                ours_memo[key] = dsim_value(pair.score, c)
                seconds[pair.score] = seconds.get(pair.score, 0.0) + time.perf_counter() - t
            ours.append(ours_memo[key])
            theirs.append(r)
        for f in failed:
            print(f"  {pair.score} vs {pair.label}: reference raised on {f}"[:200], file=sys.stderr)
        a, b = np.array(ours), np.array(theirs)
        diff = np.abs(a - b)
        rel = diff / np.maximum(np.abs(b), 1e-300)
        rho = spearmanr(a, b)[0] if np.ptp(a) > 0 and np.ptp(b) > 0 else float("nan")
        n = f"{len(ours)}" + (f" {pair.only_label}" if pair.only_label else "")
        n += f" (+{len(failed)} ref. raises)" if failed else ""
        lines.append(
            f"| {pair.score} | {pair.label} | {n} | {_fmt(diff.max())} | {_fmt(rel.max())} | {rho:.4f} | "
            f"{_fmt(a.min())} .. {_fmt(a.max())} | {pair.note} |"
        )
        print(f"  {pair.score} vs {pair.label} {pair.only_label}: done", file=sys.stderr)
    lines.append("")
    lines.append("dsim seconds over all cases: " + ", ".join(f"{k} {v:.1f}" for k, v in seconds.items()))
    return "\n".join(lines)


def values_table(feats, fus) -> str:
    cases = feats + fus
    lines = ["| case | " + " | ".join(SCORE_ROWS) + " |", "| --- |" + " --- |" * len(SCORE_ROWS)]
    for c in cases:
        row = []
        for s in SCORE_ROWS:
            ok = (s == "fu") == (c.model is not None)
            row.append(_fmt(dsim_value(s, c)) if ok else "")
        lines.append(f"| {c.name} | " + " | ".join(row) + " |")
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument(
        "--reference-dir", type=Path, help="folder with the reference repositories (see the docstring)"
    )
    ap.add_argument("--quick", action="store_true", help="fewer, smaller cases")
    args = ap.parse_args(argv)
    t0 = time.perf_counter()
    feats, fus = feature_cases(args.quick), fu_cases(args.quick)
    print(
        f"{len(feats)} feature cases, {len(fus)} network cases built in {time.perf_counter() - t0:.0f} s",
        file=sys.stderr,
    )
    if args.reference_dir is None:
        print(values_table(feats, fus))
        return 0
    refs = load_references(args.reference_dir.expanduser())
    if refs["study"] is None and refs["tllib"] is None:
        raise SystemExit(f"no reference repository found under {args.reference_dir}")
    for note in refs["notes"]:
        print(f"note: {note}", file=sys.stderr)
    print(agreement_table(feats, fus, refs))
    print(f"done in {time.perf_counter() - t0:.0f} s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
