"""dsim: which source dataset, or pretrained checkpoint, should a small medical-image dataset
transfer from?

Public API (everything a plugin or a user script may import)::

    import dsim
    ranking = dsim.rank("chest")                  # -> dsim.Ranking
    data = dsim.load_dataset("pneumoniamnist")    # -> dsim.ImageSet
    card = dsim.get_registry().get("chest")       # -> dsim.DatasetCard

Names are imported lazily so that ``import dsim`` (and ``dsim --help``) stays fast: torch and
timm are only imported by the code that needs them.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_EXPORTS = {
    # records
    "DatasetCard": "dsim.kernel.records",
    "CheckpointCard": "dsim.kernel.records",
    "BackboneSpec": "dsim.kernel.records",
    "ImageSet": "dsim.kernel.records",
    "Representation": "dsim.kernel.records",
    "Ranking": "dsim.kernel.records",
    "RankingRow": "dsim.kernel.records",
    "TransferResult": "dsim.kernel.records",
    "MeasureValue": "dsim.kernel.records",
    "RunSpec": "dsim.kernel.records",
    "RunResult": "dsim.kernel.records",
    "EXPERT_FEATURES": "dsim.kernel.records",
    "stable_hash": "dsim.kernel.records",
    "file_digest": "dsim.kernel.records",
    # plugin interfaces and hooks
    "hookimpl": "dsim.kernel.hookspecs",
    "Context": "dsim.kernel.interfaces",
    "DatasetLoader": "dsim.kernel.interfaces",
    "OverlapCheck": "dsim.kernel.interfaces",
    "BackboneFactory": "dsim.kernel.interfaces",
    "Measure": "dsim.kernel.interfaces",
    "Strategy": "dsim.kernel.interfaces",
    "Predictor": "dsim.kernel.interfaces",
    "Candidate": "dsim.kernel.interfaces",
    "FoldData": "dsim.kernel.interfaces",
    "Reproduction": "dsim.kernel.interfaces",
    "Tracker": "dsim.kernel.interfaces",
    "Executor": "dsim.kernel.interfaces",
    # errors
    "DsimError": "dsim.kernel.errors",
    "CheckpointError": "dsim.kernel.errors",
    "OptionValueError": "dsim.kernel.errors",
    "StorageError": "dsim.kernel.errors",
    "one_line": "dsim.kernel.errors",
    "env_flag": "dsim.kernel.environment",
    "UnknownNameError": "dsim.kernel.errors",
    "UnknownOptionError": "dsim.kernel.errors",
    "Parameterised": "dsim.kernel.interfaces",
    "Range": "dsim.kernel.interfaces",
    "DatasetError": "dsim.kernel.errors",
    "DataMissingError": "dsim.kernel.errors",
    "PluginError": "dsim.kernel.errors",
    "WeightsMissingError": "dsim.kernel.errors",
    "WeightsChecksumError": "dsim.kernel.errors",
    # functions
    "rank": "dsim.ranking.rank",
    "candidate_sources": "dsim.ranking.rank",
    "RankConfig": "dsim.ranking.rank",
    "measure": "dsim.ranking.pair",
    "list_measures": "dsim.kernel.catalog",
    "create_measure": "dsim.kernel.catalog",
    "create_backbone": "dsim.kernel.catalog",
    "backbone_spec": "dsim.kernel.catalog",
    "list_checkpoints": "dsim.kernel.catalog",
    "list_predictors": "dsim.kernel.catalog",
    "list_strategies": "dsim.kernel.catalog",
    "get_strategy": "dsim.kernel.catalog",
    "known_results": "dsim.kernel.catalog",
    "known_measure_values": "dsim.kernel.catalog",
    "get_predictor": "dsim.kernel.catalog",
    "load_dataset": "dsim.data.loading",
    # the target of a ranking or validation, resolved once (name, path, ImageSet, arrays)
    "resolve_target": "dsim.data.targets",
    "ResolvedTarget": "dsim.data.targets",
    "TARGET_FACTS": "dsim.data.targets",
    "find_data_file": "dsim.data.loading",
    "data_dirs": "dsim.data.loading",
    # checkpoint files: lookup, content check, strict loading
    "weights_dirs": "dsim.networks.weights",
    "find_weights_file": "dsim.networks.weights",
    "check_sha256": "dsim.networks.weights",
    "locate_weights": "dsim.networks.weights",
    "resolve_weights": "dsim.networks.weights",
    "random_weights_id": "dsim.networks.weights",
    "adapt_in_chans": "dsim.networks.weights",
    "read_state_dict": "dsim.networks.weights",
    "load_strict": "dsim.networks.weights",
    "get_registry": "dsim.kernel.registry",
    "Cache": "dsim.kernel.cache",
    "representation_of": "dsim.kernel.interfaces",
    "transferability": "dsim.kernel.metrics",
    "auc_weighted_ovr": "dsim.kernel.metrics",
    "label_aucs": "dsim.kernel.metrics",
    "mean_label_auc": "dsim.kernel.metrics",
    "multi_hot": "dsim.kernel.multilabel",
    "check_label_columns": "dsim.kernel.multilabel",
    "TASKS": "dsim.kernel.multilabel",
    "measured_transferability": "dsim.kernel.metrics",
    "fold_transferability": "dsim.kernel.metrics",
    "transfer_summary": "dsim.kernel.metrics",
    "target_baseline": "dsim.kernel.metrics",
    "classification_metrics": "dsim.networks.training",
    "is_ordinal": "dsim.kernel.records",
    "fold_metrics": "dsim.networks.training",
    "default_store_path": "dsim.validation.store",
    "setup_of": "dsim.validation.store",
    "plot_report": "dsim.validation.report",
    # evaluation of predictors, and the one way a predictor builds its Ranking
    "assemble_ranking": "dsim.evaluation.evaluate",
    # checkpoints as candidates
    "load_checkpoint": "dsim.networks.checkpoints",
    "checkpoint_input_size": "dsim.networks.checkpoints",
    "checkpoint_features": "dsim.networks.checkpoints",
    "weights_argument": "dsim.networks.checkpoints",
    "checkpoint_missing": "dsim.networks.checkpoints",
    "load_zoo": "dsim.networks.checkpoints",
    "source_cards": "dsim.networks.checkpoints",
    "canonical_names": "dsim.kernel.catalog",
    "meta_dataset": "dsim.evaluation.evaluate",
    "MetaDataset": "dsim.evaluation.evaluate",
    "evaluate_loto": "dsim.evaluation.evaluate",
    "evaluate_suite": "dsim.evaluation.evaluate",
    "noise_ceiling": "dsim.evaluation.evaluate",
    "ranking_metrics": "dsim.evaluation.evaluate",
    "transfer_table": "dsim.evaluation.evaluate",
    "measured_basis": "dsim.kernel.metrics",
    "data_missing": "dsim.data.loading",
    "to_tensor": "dsim.data.tensors",
    "to_array": "dsim.data.tensors",
    "lazy_module": "dsim.kernel.lazy",
    "extract_features": "dsim.data.tensors",
    "notify": "dsim.kernel.plugins",
    # validation: training engine, results store, validate/pretrain
    "TrainConfig": "dsim.networks.training",
    "train_and_evaluate": "dsim.networks.training",
    "ResultsStore": "dsim.validation.store",
    "validate": "dsim.validation.validate",
    "ValidateConfig": "dsim.validation.config",
    "pretrain": "dsim.networks.pretraining",
    "ValidationReport": "dsim.validation.report",
}

__all__ = ["__version__", *_EXPORTS]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'dsim' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
