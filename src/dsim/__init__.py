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
    "DatasetCard": "dsim.records",
    "CheckpointCard": "dsim.records",
    "ImageSet": "dsim.records",
    "Representation": "dsim.records",
    "Ranking": "dsim.records",
    "RankingRow": "dsim.records",
    "TransferResult": "dsim.records",
    "MeasureValue": "dsim.records",
    "RunSpec": "dsim.records",
    "RunResult": "dsim.records",
    "EXPERT_FEATURES": "dsim.records",
    "stable_hash": "dsim.records",
    "file_digest": "dsim.records",
    # plugin interfaces and hooks
    "hookimpl": "dsim.hookspecs",
    "Context": "dsim.interfaces",
    "DatasetLoader": "dsim.interfaces",
    "BackboneFactory": "dsim.interfaces",
    "Measure": "dsim.interfaces",
    "Strategy": "dsim.interfaces",
    "Predictor": "dsim.interfaces",
    "Candidate": "dsim.interfaces",
    "FoldData": "dsim.interfaces",
    "Reproduction": "dsim.interfaces",
    # errors
    "DsimError": "dsim.errors",
    "CheckpointError": "dsim.errors",
    "OptionValueError": "dsim.errors",
    "StorageError": "dsim.errors",
    "one_line": "dsim.errors",
    "UnknownNameError": "dsim.errors",
    "UnknownOptionError": "dsim.errors",
    "Parameterised": "dsim.interfaces",
    "Range": "dsim.interfaces",
    "DatasetError": "dsim.errors",
    "DataMissingError": "dsim.errors",
    "PluginError": "dsim.errors",
    "WeightsMissingError": "dsim.errors",
    "WeightsChecksumError": "dsim.errors",
    # functions
    "rank": "dsim.ranking",
    "candidate_sources": "dsim.ranking",
    "RankConfig": "dsim.ranking",
    "measure": "dsim.api",
    "list_measures": "dsim.catalog",
    "create_measure": "dsim.catalog",
    "create_backbone": "dsim.catalog",
    "list_checkpoints": "dsim.catalog",
    "list_predictors": "dsim.catalog",
    "list_strategies": "dsim.catalog",
    "get_strategy": "dsim.catalog",
    "known_results": "dsim.catalog",
    "known_measure_values": "dsim.catalog",
    "get_predictor": "dsim.catalog",
    "load_dataset": "dsim.data",
    "find_data_file": "dsim.data",
    "data_dirs": "dsim.data",
    # checkpoint files: lookup, content check, strict loading
    "weights_dirs": "dsim.weights",
    "find_weights_file": "dsim.weights",
    "check_sha256": "dsim.weights",
    "locate_weights": "dsim.weights",
    "resolve_weights": "dsim.weights",
    "random_weights_id": "dsim.weights",
    "adapt_in_chans": "dsim.weights",
    "read_state_dict": "dsim.weights",
    "load_strict": "dsim.weights",
    "get_registry": "dsim.registry",
    "Cache": "dsim.cache",
    "representation_of": "dsim.measures",
    "transferability": "dsim.metrics",
    "auc_weighted_ovr": "dsim.metrics",
    "label_aucs": "dsim.metrics",
    "mean_label_auc": "dsim.metrics",
    "multi_hot": "dsim.multilabel",
    "check_label_columns": "dsim.multilabel",
    "TASKS": "dsim.multilabel",
    "measured_transferability": "dsim.metrics",
    "target_baseline": "dsim.metrics",
    "classification_metrics": "dsim.training",
    "is_ordinal": "dsim.records",
    "fold_metrics": "dsim.training",
    "default_store_path": "dsim.store",
    # evaluation of predictors, and the one way a predictor builds its Ranking
    "assemble_ranking": "dsim.evaluation",
    # checkpoints as candidates
    "load_checkpoint": "dsim.checkpoints",
    "checkpoint_input_size": "dsim.checkpoints",
    "checkpoint_features": "dsim.checkpoints",
    "weights_argument": "dsim.checkpoints",
    "checkpoint_missing": "dsim.checkpoints",
    "load_zoo": "dsim.checkpoints",
    "source_cards": "dsim.checkpoints",
    "canonical_names": "dsim.catalog",
    "meta_dataset": "dsim.evaluation",
    "MetaDataset": "dsim.evaluation",
    "evaluate_loto": "dsim.evaluation",
    "evaluate_suite": "dsim.evaluation",
    "noise_ceiling": "dsim.evaluation",
    "ranking_metrics": "dsim.evaluation",
    "transfer_table": "dsim.evaluation",
    "measured_basis": "dsim.metrics",
    "data_missing": "dsim.data",
    "to_tensor": "dsim.tensors",
    "extract_features": "dsim.tensors",
    "notify": "dsim.plugins",
    # validation: training engine, results store, validate/pretrain
    "TrainConfig": "dsim.training",
    "train_and_evaluate": "dsim.training",
    "ResultsStore": "dsim.store",
    "validate": "dsim.validation",
    "ValidateConfig": "dsim.validate_config",
    "pretrain": "dsim.pretraining",
    "ValidationReport": "dsim.report",
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
