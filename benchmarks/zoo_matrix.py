"""A measured checkpoint zoo at CPU scale: ground truth, every model score, leave-one-target-out.

    export DSIM_DATA_DIR=../shared/data DSIM_WEIGHTS_DIR=../shared/weights DSIM_CACHE_DIR=/tmp/zoo-cache
    python benchmarks/zoo_matrix.py --quick                    # smoke test (~2 min, /tmp CSVs)
    python benchmarks/zoo_matrix.py --stage pretrain           # the 8 dsim checkpoints + the zoo YAML
    python benchmarks/zoo_matrix.py --stage lp                 # linear-probe ground truth (N 100, 500)
    python benchmarks/zoo_matrix.py --stage scores             # the 10 model scores of every pair
    python benchmarks/zoo_matrix.py --stage ft                 # fine-tuning ground truth (N 100)
    python benchmarks/zoo_matrix.py --evaluate                 # the tables (markdown)

Every stage is resumable: a row already in its CSV is skipped, features and checkpoints come from
dsim's content-keyed caches, every random draw is seeded. See docs/zoo.md for the protocol.

The zoo (15 candidates): the five shared checkpoints (``mobilenetv1-x0.25-imagenet``,
``cifar10-resnet20/32/44/56``); ``smallcnn`` and ``cifar-resnet20`` pretrained by
``dsim.pretrain`` from random init on usps, mnist-test, dtd10 and blood-pbc-28 (8 checkpoints,
:data:`PRETRAIN`); random-init ``mobilenetv1-x0.25`` and ``cifar-resnet20``. Each network runs
at one input size (:data:`SIZES`), the same for features, scores and fine-tuning. A checkpoint
pretrained on the target's family (the registry's rule) is no candidate for it.

Targets: pneumoniamnist, breastmnist, busi-64, retinamnist, blood-pbc-28, ham10000-8x8
(medical), cifar10-sample, coil20 (natural). Per target: a fixed test set (the official test
split where there is one, else a stratified quarter; at most 500 images) and a training pool
(the other images, at most 1500); each repeat draws a new stratified training set from the pool.

Ground truth (TransferResult rows, ``fold`` 0, ``repeat`` = the training draw):

* ``zoo:lp:n100`` / ``zoo:lp:n500``: frozen penultimate features (``dsim.checkpoint_features``,
  cached) -> standardised -> logistic regression, C by 3-fold inner CV -> test AUC (weighted
  one-vs-rest, ``dsim.auc_weighted_ovr``). N = 500 is capped at 80 % of a small pool.
* ``zoo:ft:n100``: the whole network fine-tuned with ``dsim.train_and_evaluate`` (weights = the
  checkpoint, a new linear head; early stopping on 100 validation images drawn from the pool).

Scores: ``logme leep nce h-score knn nleep sfda parc lp fu`` of every (checkpoint, target) on a
fixed stratified 500-image subsample of the target's pool, through the measures' ``pair`` with a
``dsim.Cache`` (the features cache is shared with the linear probe); and ``filter-structure``
(Fok's share of structured filters, the checkpoint alone: one value per checkpoint, cached).
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
    os.environ.setdefault(_var, "1")  # BLAS threads only fight over two shared cores

import argparse  # noqa: E402
import csv  # noqa: E402
import shlex  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

HERE = Path(__file__).resolve().parent
CSV_LP = HERE / "zoo_matrix_results_lp.csv"
CSV_FT = HERE / "zoo_matrix_results_ft.csv"
CSV_VALUES = HERE / "zoo_matrix_results_values.csv"

TARGETS = (
    "pneumoniamnist",
    "breastmnist",
    "busi-64",
    "retinamnist",
    "blood-pbc-28",
    "ham10000-8x8",
    "cifar10-sample",
    "coil20",
)
SHARED = (
    "mobilenetv1-x0.25-imagenet",
    "cifar10-resnet20",
    "cifar10-resnet32",
    "cifar10-resnet44",
    "cifar10-resnet56",
)
OWN_SOURCES = ("usps", "mnist-test", "dtd10", "blood-pbc-28")
OWN_ARCHS = ("smallcnn", "cifar-resnet20")
RANDOM_ARCHS = ("mobilenetv1-x0.25", "cifar-resnet20")
#: input size of each network (px): the CIFAR nets and smallcnn at 32; the ImageNet MobileNet,
#: trained at 224, at 96 (its last stage then sees 3x3; 224 px would cost ~5x more on 2 cores)
SIZES = {"mobilenetv1-x0.25": 96, "smallcnn": 32, "cifar-resnet20": 32}
for _d in (32, 44, 56):
    SIZES[f"cifar-resnet{_d}"] = 32
FAMILY = {"mobilenetv1-x0.25": "mobilenet", "smallcnn": "smallcnn"}
#: dsim's own checkpoints: random init, at most 2000 images of the source, seed 0
PRETRAIN = {"epochs": 12, "batch_size": 64, "lr": 2e-3, "patience": 4, "image_size": 32}
PRETRAIN_MAX = 2000
#: fine-tuning: every layer trains, AdamW, plateau schedule, early stopping on the val loss
FINETUNE = {
    "epochs": 10,
    "batch_size": 32,
    "lr": 1e-3,
    "weight_decay": 1e-4,
    "patience": 3,
    "min_epochs": 3,
    "schedule": "plateau",
    "augment": True,
    "class_weights": True,
}
#: the ten model scores, and Fok's data-free filter-structure score of the checkpoint alone
SCORES = ("logme", "leep", "nce", "h-score", "knn", "nleep", "sfda", "parc", "lp", "fu", "filter-structure")
TEST_MAX, POOL_MAX, SCORE_N, VAL_N = 500, 1500, 500, 100
LP_SIZES, FT_SIZES = (100, 500), (100,)
LP_REPEATS, FT_REPEATS = 10, 5
C_GRID = (0.01, 0.1, 1.0, 10.0)
RESULT_FIELDS = ("source", "target", "fold", "repeat", "auc", "setup", "strategy", "n_train")
VALUE_FIELDS = ("measure", "source", "target", "value")

QUICK = {
    "targets": ("breastmnist", "coil20"),
    "shared": ("cifar10-resnet20", "mobilenetv1-x0.25-imagenet"),
    "own_sources": ("usps",),
    "own_archs": ("smallcnn",),
    "random_archs": ("cifar-resnet20",),
    "pretrain": {**PRETRAIN, "epochs": 1},
    "pretrain_max": 300,
    "lp_sizes": (40,),
    "ft_sizes": (40,),
    "repeats": 2,
    "finetune": {**FINETUNE, "epochs": 1, "min_epochs": 1},
    "scores": ("logme", "leep", "knn", "fu"),
}


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


# --------------------------------------------------------------------------------------- CSVs
def read_csv(path: Path) -> list[dict[str, str]]:
    if not path.exists():
        return []
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


class Appender:
    """Rows appended to a CSV (header written once), flushed one by one: a killed run keeps
    every finished row, and a rerun skips the keys already there."""

    def __init__(self, path: Path, fields: tuple[str, ...], key: tuple[str, ...]):
        self.path, self.fields, self.key = path, fields, key
        self.refresh()

    def refresh(self) -> None:
        """Re-read the keys on disk (another process may be filling other repeats)."""
        self.done = {tuple(r[k] for k in self.key) for r in read_csv(self.path)}

    def has(self, **row) -> bool:
        return tuple(str(row[k]) for k in self.key) in self.done

    def add(self, **row) -> None:
        new = not self.path.exists() or self.path.stat().st_size == 0
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "a", newline="") as f:
            w = csv.DictWriter(f, fieldnames=self.fields)
            if new:
                w.writeheader()
            w.writerow({k: row[k] for k in self.fields})
        self.done.add(tuple(str(row[k]) for k in self.key))


def results_appender(path: Path) -> Appender:
    return Appender(path, RESULT_FIELDS, ("setup", "target", "source", "repeat", "fold"))


# --------------------------------------------------------------------------------------- data
def stratified(labels: np.ndarray, pool: np.ndarray, n: int, seed: int) -> np.ndarray:
    """``n`` indices of ``pool`` (sorted), each class keeping its share of the pool and at least
    one image where the pool has one; seeded."""
    rng = np.random.default_rng(seed)
    pool = np.asarray(pool)
    if n >= len(pool):
        return np.sort(pool)
    classes, counts = np.unique(labels[pool], return_counts=True)
    share = counts / counts.sum() * n
    take = np.minimum(np.maximum(1, np.floor(share)).astype(int), counts)
    for i in np.argsort(-(share - np.floor(share))):  # what rounding left, largest remainders first
        if take.sum() >= n:
            break
        if take[i] < counts[i]:
            take[i] += 1
    while take.sum() > n:  # the at-least-one rule overshot: trim the largest classes
        take[np.argmax(take)] -= 1
    out = [rng.choice(pool[labels[pool] == c], t, replace=False) for c, t in zip(classes, take)]
    return np.sort(np.concatenate(out))


class Target:
    """One target: its images, the fixed test set and the training pool (seeded, stratified)."""

    def __init__(self, name: str, seed: int = 0):
        import dsim

        self.name = name
        self.data = dsim.load_dataset(name)
        y = self.data.labels
        idx = np.arange(len(y))
        if self.data.split is not None and (self.data.split == "test").any():
            test = idx[self.data.split == "test"]
        else:
            test = stratified(y, idx, min(TEST_MAX, len(y) // 4), seed)
        self.test_idx = stratified(y, test, TEST_MAX, seed)
        rest = np.setdiff1d(idx, test)
        self.pool_idx = stratified(y, rest, POOL_MAX, seed)
        self.test = self.data.take(self.test_idx, name=f"{name}:test")
        self.pool = self.data.take(self.pool_idx, name=f"{name}:pool")
        pos = stratified(self.pool.labels, np.arange(len(self.pool)), SCORE_N, seed)
        self.scores = self.pool.take(pos, name=f"{name}:scores")

    def n_train(self, n: int) -> int:
        """N, capped at 80 % of a small pool (so that repeats draw different training sets)."""
        return min(n, int(0.8 * len(self.pool)))

    def draw(self, n: int, repeat: int, val: int = 0) -> tuple[np.ndarray, np.ndarray]:
        """Pool positions of repeat ``repeat``'s training set (and ``val`` validation images)."""
        all_ = np.arange(len(self.pool))
        tr = stratified(self.pool.labels, all_, self.n_train(n), 1000 + repeat)
        va = stratified(self.pool.labels, np.setdiff1d(all_, tr), val, 2000 + repeat) if val else all_[:0]
        return tr, va


# --------------------------------------------------------------------------------------- zoo
def zoo_spec(cfg: dict) -> list[dict]:
    """The candidates as card fields; dsim's own checkpoints carry ``_pretrain`` (built by
    :func:`build_zoo`)."""
    import dsim

    reg = dsim.list_checkpoints()
    out = []
    for name in cfg["shared"]:
        card = reg[name].to_dict()
        card.pop("provider", None)
        size = SIZES[card["architecture"]]
        if card.get("input_size") != size:
            card["notes"] = [
                *card.get("notes", []),
                f"trained at {card['input_size']} px; run at {size} px here",
            ]
        card["input_size"] = size
        out.append(card)
    for arch in cfg["own_archs"]:
        for src in cfg["own_sources"]:
            out.append(
                {
                    "name": f"{arch}-{src}",
                    "title": f"{arch} pretrained by dsim on {src} (random init, <= {cfg['pretrain_max']} images)",
                    "architecture": arch,
                    "weights": "file:",
                    "pretrained_on": src,
                    "family": FAMILY.get(arch, "resnet"),
                    "input_size": SIZES[arch],
                    "_pretrain": src,
                }
            )
    for arch in cfg["random_archs"]:
        out.append(
            {
                "name": f"{arch}-random",
                "title": f"{arch}, random init (seeded; its random classifier gives LEEP/NCE their logits)",
                "architecture": arch,
                "weights": "random",
                "family": FAMILY.get(arch, "resnet"),
                "num_classes": 1000 if arch.startswith("mobilenet") else 10,
                "input_size": SIZES[arch],
            }
        )
    return out


def _parameters(card) -> int:
    import dsim

    model = dsim.load_checkpoint(card, num_classes=int(card.num_classes or 0))
    return int(sum(p.numel() for p in model.parameters()))


def build_zoo(cfg: dict, path: Path) -> list:
    """Pretrain dsim's own checkpoints (``dsim.pretrain``: cached by content), write the zoo
    YAML (absolute ``file:`` paths, sha256, parameters) and return its cards."""
    import yaml

    import dsim

    entries = []
    for spec in zoo_spec(cfg):
        spec = dict(spec)
        src = spec.pop("_pretrain", None)
        if src is not None:
            data = dsim.load_dataset(src).subsample(cfg["pretrain_max"], seed=0)
            t0 = time.perf_counter()
            ck = dsim.pretrain(data, spec["architecture"], hyperparameters=cfg["pretrain"], seed=0)
            log(f"pretrain {spec['name']}: {len(data)} images, {time.perf_counter() - t0:.0f} s -> {ck}")
            spec["weights"] = f"file:{ck}"
            spec["sha256"] = dsim.file_digest(ck)
            hp = ", ".join(f"{k} {v}" for k, v in cfg["pretrain"].items())
            spec["notes"] = [f"dsim.pretrain on {len(data)} images of {src} (seed 0): {hp}"]
        if not spec.get("parameters"):
            spec["parameters"] = _parameters(dsim.CheckpointCard.from_dict(spec))
        entries.append(spec)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump({"checkpoints": entries}, sort_keys=False))
    log(f"zoo: {len(entries)} checkpoints -> {path}")
    return dsim.load_zoo(path)


def load_cards(cfg: dict, path: Path) -> list:
    """The zoo's cards: from its YAML when built, else from the spec (enough for the evaluation:
    names, architectures, pretraining sets, random init)."""
    import dsim

    if path.exists():
        return dsim.load_zoo(path)
    cards = []
    for spec in zoo_spec(cfg):
        spec = {k: v for k, v in spec.items() if not k.startswith("_")}
        if spec["weights"] == "file:":
            spec["weights"] = "file:not-built-here.pt"
        cards.append(dsim.CheckpointCard.from_dict(spec))
    return cards


def candidates(cards, target: str) -> list:
    """The cards that may be ranked for ``target``: none pretrained on the target's family."""
    import dsim

    fam = dsim.get_registry().family(target) | {target}
    return [c for c in cards if not (c.pretrained_on and c.pretrained_on in fam)]


def _ctx(seed: int = 0, max_samples=None):
    import dsim

    return dsim.Context(seed=seed, device="cpu", cache=dsim.Cache(), max_samples=max_samples)


# --------------------------------------------------------------------------------------- ground truth
def probe_auc(ftr, ytr, fte, yte, k: int, seed: int) -> float:
    """Test AUC of a logistic regression on standardised features, C chosen by 3-fold CV."""
    import warnings

    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    import dsim

    def fit(X, y, C):
        m = make_pipeline(StandardScaler(), LogisticRegression(C=C, max_iter=500))
        m.fit(X, y)
        return m

    def proba(m, X):  # columns for all k classes (a class missing from the training draw: 0)
        p = np.zeros((len(X), k))
        p[:, m.classes_] = m.predict_proba(X)
        return p

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        warnings.filterwarnings("ignore", message="The least populated class")
        splits = min(3, int(np.bincount(ytr).max()))
        folds = (
            list(StratifiedKFold(splits, shuffle=True, random_state=seed).split(ftr, ytr))
            if splits > 1
            else []
        )
        inner = {}
        for C in C_GRID:
            aucs = []
            for a, b in folds:
                if len(np.unique(ytr[a])) < 2 or len(np.unique(ytr[b])) < 2:
                    continue
                aucs.append(dsim.auc_weighted_ovr(ytr[b], proba(fit(ftr[a], ytr[a], C), ftr[b])))
            inner[C] = float(np.mean(aucs)) if aucs else 0.0
        best = max(C_GRID, key=lambda C: (inner[C], -C))  # ties: the stronger regularisation
        return float(dsim.auc_weighted_ovr(yte, proba(fit(ftr, ytr, best), fte)))


def run_lp(cfg, cards, out: Appender) -> None:
    import dsim

    t_all = time.perf_counter()
    for tname in cfg["targets"]:
        tgt = Target(tname)
        k = tgt.data.num_classes
        for card in candidates(cards, tname):
            todo = [
                (n, r)
                for n in cfg["lp_sizes"]
                for r in range(cfg.get("first_repeat", 0), cfg["repeats"])
                if not out.has(setup=f"zoo:lp:n{n}", target=tname, source=card.name, repeat=r, fold=0)
            ]
            if not todo:
                continue
            t0 = time.perf_counter()
            ctx = _ctx()
            fpool, _ = dsim.checkpoint_features(card, tgt.pool, image_size=card.input_size, ctx=ctx)
            ftest, _ = dsim.checkpoint_features(card, tgt.test, image_size=card.input_size, ctx=ctx)
            t1 = time.perf_counter()
            for n, r in todo:
                tr, _ = tgt.draw(n, r)
                auc = probe_auc(fpool[tr], tgt.pool.labels[tr], ftest, tgt.test.labels, k, seed=r)
                out.add(
                    source=card.name,
                    target=tname,
                    fold=0,
                    repeat=r,
                    auc=f"{auc:.6f}",
                    setup=f"zoo:lp:n{n}",
                    strategy="linear-probe",
                    n_train=len(tr),
                )
            log(
                f"lp {tname} <- {card.name}: features {t1 - t0:.1f} s, {len(todo)} probes "
                f"{time.perf_counter() - t1:.1f} s (total {time.perf_counter() - t_all:.0f} s)"
            )


def run_ft(cfg, cards, out: Appender) -> None:
    """Fine-tuning, repeat by repeat (the first repeats of every target come first, so that the
    noise ceiling can be measured early)."""
    import dsim

    t_all = time.perf_counter()
    targets = {t: None for t in cfg["targets"]}
    for r in range(cfg.get("first_repeat", 0), cfg["repeats"]):
        for tname in targets:
            for n in cfg["ft_sizes"]:
                setup = f"zoo:ft:n{n}"
                out.refresh()
                todo = [
                    c
                    for c in candidates(cards, tname)
                    if not out.has(setup=setup, target=tname, source=c.name, repeat=r, fold=0)
                ]
                if not todo:
                    continue
                if targets[tname] is None:
                    targets[tname] = Target(tname)
                tgt = targets[tname]
                tr, va = tgt.draw(n, r, val=VAL_N)
                fold = dsim.FoldData(train=tgt.pool.take(tr), val=tgt.pool.take(va), test=tgt.test)
                for card in todo:
                    t0 = time.perf_counter()
                    spec = dsim.RunSpec(
                        source=card.name,
                        target=tname,
                        backbone=card.architecture,
                        strategy="finetune",
                        fold=0,
                        seed=r,
                        hyperparameters={**cfg["finetune"], "image_size": int(card.input_size)},
                    )
                    m = dsim.train_and_evaluate(
                        spec, fold, _ctx(seed=r), weights=dsim.weights_argument(card), mode="all"
                    )
                    out.add(
                        source=card.name,
                        target=tname,
                        fold=0,
                        repeat=r,
                        auc=f"{m['auc']:.6f}",
                        setup=setup,
                        strategy="finetune",
                        n_train=len(tr),
                    )
                    log(
                        f"ft r{r} {tname} <- {card.name}: AUC {m['auc']:.3f}, {m['epochs']} epochs, "
                        f"{time.perf_counter() - t0:.1f} s (total {time.perf_counter() - t_all:.0f} s)"
                    )


def run_scores(cfg, cards, out: Appender) -> None:
    import dsim

    every = dsim.list_measures()
    t_all = time.perf_counter()
    for tname in cfg["targets"]:
        tgt = Target(tname)
        for card in candidates(cards, tname):
            t0 = time.perf_counter()
            got, why = [], []
            for name in cfg["scores"]:
                if out.has(measure=name, source=card.name, target=tname):
                    continue
                m = dsim.create_measure(name) if name in every else None
                if m is None:
                    raise SystemExit(f"measure {name!r} is not registered")
                try:
                    value = float(m.pair(card, tgt.scores, _ctx(max_samples=SCORE_N)))
                except dsim.DsimError as exc:
                    why.append(f"{name}: {str(exc).splitlines()[0]}")
                    continue
                out.add(measure=name, source=card.name, target=tname, value=repr(value))
                got.append(name)
            if got or why:
                log(
                    f"scores {tname} <- {card.name}: {len(got)} in {time.perf_counter() - t0:.1f} s"
                    + (f"; none for {'; '.join(why)}" if why else "")
                    + f" (total {time.perf_counter() - t_all:.0f} s)"
                )


# --------------------------------------------------------------------------------------- evaluation
def load_results(paths):
    import dsim

    out = []
    for p in paths:
        for row in read_csv(p):
            out.append(
                dsim.TransferResult(
                    source=row["source"],
                    target=row["target"],
                    fold=int(row["fold"]),
                    repeat=int(row["repeat"]),
                    auc=float(row["auc"]),
                    origin="zoo_matrix",
                    setup=row["setup"],
                )
            )
    return out


def load_values(path):
    import dsim

    return [
        dsim.MeasureValue(r["measure"], r["source"], r["target"], float(r["value"]), None, "zoo_matrix")
        for r in read_csv(path)
    ]


def evaluate(cfg, cards, result_paths, values_path, boot: int = 10000) -> list[str]:
    """Leave-one-target-out of every score alone, track-record, rank-aggregation and the
    meta-ranker, per setup, with noise ceilings and paired bootstrap intervals (markdown)."""
    import dsim
    from dsim.evaluation.evaluate import (
        evaluate_suite,
        meta_dataset,
        noise_ceiling,
        paired_bootstrap,
        render_table,
    )
    from dsim.networks.checkpoints import as_source_card

    results = load_results(result_paths)
    values = load_values(values_path)
    if not results:
        raise SystemExit(f"no results in {', '.join(map(str, result_paths))}: run the lp/ft stages first")
    datasets = {c.name: c for c in dsim.get_registry()}
    src_cards = {**datasets, **{c.name: as_source_card(c, datasets) for c in cards}}
    every = dsim.list_measures()
    scores = [m for m in cfg["scores"] if any(v.measure == m for v in values)]
    # the predictors see what `dsim rank` computes by default; an opt-in score (filter-structure)
    # is judged alone, on its own values
    default = [m for m in scores if not every[m].opt_in]
    opt_in = [m for m in scores if every[m].opt_in]
    from dsim.kernel.defaults import LEARNED_PREDICTOR

    suite = [
        (LEARNED_PREDICTOR, LEARNED_PREDICTOR, {}),
        ("meta-ranker", "meta-ranker", {}),
        ("track-record", "track-record", {}),
        ("fixed-blend", "fixed-blend", {}),
        ("rank-aggregation", "rank-aggregation", {}),
        *[(f"{m} alone", "single-measure", {"measure": m}) for m in default],
    ]
    base_values = [v for v in values if v.measure not in opt_in]
    lines, pooled = [], {}
    for setup in sorted({r.setup for r in results}):
        rs = [r for r in results if r.setup == setup]
        meta = meta_dataset(setup, rs, base_values, cards=src_cards, measures={m: every[m] for m in default})
        t0 = time.perf_counter()
        out = evaluate_suite(suite, meta.results, meta.values, meta.cards, meta.kinds)
        for m in opt_in:
            own = meta_dataset(setup, rs, values, cards=src_cards, measures={m: every[m]})
            solo = [(f"{m} alone (opt-in)", "single-measure", {"measure": m})]
            out.update(evaluate_suite(solo, own.results, own.values, own.cards, own.kinds))
        ceil = noise_ceiling(rs)
        for lab, rows in out.items():
            pooled.setdefault(lab, []).extend(rows)
        lines += render_table(out, ceil, f"{setup} ({len(rs)} runs)", metric="weighted_tau")
        lines += _bootstrap_lines(out, default, boot, paired_bootstrap)
        lines.append(f"(evaluated in {time.perf_counter() - t0:.1f} s)")
        lines.append("")
    if len({r.setup for r in results}) > 1:
        lines.append(f"**all setups pooled** ({len(next(iter(pooled.values())))} tasks)")
        lines.append("")
        lines += _summary_table(pooled)
        lines += _bootstrap_lines(pooled, default, boot, paired_bootstrap)
    return lines


def _summary_table(out) -> list[str]:
    from dsim.evaluation.evaluate import mean_metrics

    lines = ["| predictor | weighted tau | Spearman | top-1 | regret AUC |", "|---|---|---|---|---|"]
    for lab, rows in out.items():
        s = mean_metrics(rows)
        lines.append(
            f"| {lab} | {s.get('weighted_tau', float('nan')):.2f} | {s.get('spearman', float('nan')):.2f} | "
            f"{s.get('top1', 0):.2f} | {s.get('regret_auc', float('nan')):.3f} |"
        )
    return lines + [""]


def _bootstrap_lines(out, scores, n, paired_bootstrap) -> list[str]:
    from dsim.evaluation.evaluate import mean_metrics

    singles = {f"{m} alone": mean_metrics(out[f"{m} alone"]).get("weighted_tau", -9) for m in scores}
    best = max(singles, key=singles.get) if singles else None
    from dsim.kernel.defaults import LEARNED_PREDICTOR as D

    lines = []
    pairs = [(D, x) for x in (best, "track-record", "meta-ranker", "fixed-blend") if x]
    pairs += [("meta-ranker", x) for x in (best, "track-record", "rank-aggregation") if x]
    for me, other in pairs:
        b = paired_bootstrap(out[me], out[other], "weighted_tau", n=n, seed=0)
        lines.append(
            f"- {me} minus {other}{' (best single score)' if other == best else ''}: "
            f"weighted tau {b['mean']:+.3f} [95 % {b['low']:+.3f}, {b['high']:+.3f}] over {b['n_tasks']} "
            f"tasks ({b['better']} better, {b['worse']} worse)"
        )
    return lines + [""]


def ceiling_lines(result_paths) -> list[str]:
    from dsim.evaluation.evaluate import noise_ceiling

    rows = noise_ceiling(load_results(result_paths))
    lines = [
        "| setup | target | repeats | split-half rho | reliability | ceiling |",
        "|---|---|---|---|---|---|",
    ]
    for c in rows:
        lines.append(
            f"| {c['setup']} | {c['target']} | {c['n_units']} | {c['split_half']:.2f} | "
            f"{c['reliability']:.2f} | {c['ceiling']:.2f} |"
        )
    return lines


# --------------------------------------------------------------------------------------- main
def config(args) -> dict:
    cfg = {
        "targets": TARGETS,
        "shared": SHARED,
        "own_sources": OWN_SOURCES,
        "own_archs": OWN_ARCHS,
        "random_archs": RANDOM_ARCHS,
        "pretrain": PRETRAIN,
        "pretrain_max": PRETRAIN_MAX,
        "lp_sizes": LP_SIZES,
        "ft_sizes": FT_SIZES,
        "repeats": None,
        "finetune": FINETUNE,
        "scores": SCORES,
    }
    if args.quick:
        cfg.update(QUICK)
    cfg["first_repeat"] = args.first_repeat
    if args.targets:
        cfg["targets"] = tuple(t for t in args.targets.split(",") if t)
    return cfg


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument(
        "--stage",
        default=None,
        help="pretrain | lp | scores | ft | all, comma-separated (default: all, none with --evaluate/--ceiling)",
    )
    ap.add_argument("--evaluate", action="store_true", help="print the leave-one-target-out tables")
    ap.add_argument("--ceiling", action="store_true", help="print the noise ceilings measured so far")
    ap.add_argument("--quick", action="store_true", help="smoke test: 2 targets, 4 candidates, /tmp CSVs")
    ap.add_argument(
        "--repeats", type=int, default=None, help=f"training draws (lp {LP_REPEATS}, ft {FT_REPEATS})"
    )
    ap.add_argument(
        "--first-repeat", type=int, default=0, help="start at this repeat (a second process takes later ones)"
    )
    ap.add_argument("--targets", default=None, help="comma-separated subset of the targets")
    ap.add_argument("--zoo", default=None, help="zoo YAML (default: <DSIM_CACHE_DIR>/zoo/zoo_matrix.yaml)")
    ap.add_argument("--out", default=None, help="folder of the CSVs (default: benchmarks/; --quick: /tmp)")
    ap.add_argument(
        "--threads", type=int, default=1, help="torch threads (1 measured fastest on 2 shared cores)"
    )
    ap.add_argument("--bootstrap", type=int, default=10000, help="paired bootstrap resamples")
    args = ap.parse_args(argv)

    import torch

    import dsim

    torch.set_num_threads(args.threads)
    cfg = config(args)
    from dsim.kernel.cache import default_cache_dir

    zoo_path = (
        Path(args.zoo)
        if args.zoo
        else default_cache_dir() / "zoo" / ("zoo_quick.yaml" if args.quick else "zoo_matrix.yaml")
    )
    out_dir = Path(args.out) if args.out else (Path("/tmp/zoo-quick") if args.quick else HERE)
    paths = {
        "lp": out_dir / CSV_LP.name,
        "ft": out_dir / CSV_FT.name,
        "values": out_dir / CSV_VALUES.name,
    }
    default = "" if args.evaluate or args.ceiling else "all"
    stages = [s for s in (args.stage if args.stage is not None else default).split(",") if s]
    if "all" in stages:
        stages = ["pretrain", "lp", "scores", "ft"]
    unknown = set(stages) - {"pretrain", "lp", "scores", "ft"}
    if unknown:
        raise SystemExit(f"unknown stage(s) {', '.join(sorted(unknown))}: pretrain, lp, scores, ft, all")
    t0 = time.perf_counter()
    log(f"dsim {dsim.__version__}; torch threads {torch.get_num_threads()}; cache {default_cache_dir()}")
    cards = None
    if stages:
        cards = build_zoo(cfg, zoo_path)
    for st in stages:
        ts = time.perf_counter()
        if st == "lp":
            run_lp(
                {**cfg, "repeats": args.repeats or cfg["repeats"] or LP_REPEATS},
                cards,
                results_appender(paths["lp"]),
            )
        elif st == "ft":
            run_ft(
                {**cfg, "repeats": args.repeats or cfg["repeats"] or FT_REPEATS},
                cards,
                results_appender(paths["ft"]),
            )
        elif st == "scores":
            run_scores(cfg, cards, Appender(paths["values"], VALUE_FIELDS, ("measure", "source", "target")))
        if st != "pretrain":
            log(f"stage {st}: {time.perf_counter() - ts:.0f} s")
    if args.ceiling:
        print("\n".join(ceiling_lines([paths["lp"], paths["ft"]])))
    if args.evaluate:
        cards = cards or load_cards(cfg, zoo_path)
        lines = evaluate(cfg, cards, [paths["lp"], paths["ft"]], paths["values"], boot=args.bootstrap)
        cmd = "python benchmarks/zoo_matrix.py " + " ".join(shlex.quote(a) for a in (argv or sys.argv[1:]))
        print("\n".join([f"`{cmd}`", "", *lines]))
    log(f"done in {time.perf_counter() - t0:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
