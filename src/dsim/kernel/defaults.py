"""The names of dsim's built-in plugins, and of the built-in items the core falls back to.

This is the one place the core names concrete plugins (as pytest's ``default_plugins`` and
datasette's ``DEFAULT_PLUGINS``). Every other core module imports the names from here, so a
renamed plugin is renamed once, and a third party can read what the defaults are.
"""

from __future__ import annotations

from typing import Any, Mapping

#: built-in plugin modules, registered in this order before any third-party plugin (the same
#: modules are declared in pyproject.toml's ``dsim`` entry-point group, the public path; a test
#: keeps the two lists equal). Registering them from here lets a source checkout run without
#: installing (``PYTHONPATH=src:plugins``).
DEFAULT_PLUGINS: tuple[tuple[str, str], ...] = (
    ("expert", "dsim_plugins.expert"),
    ("published", "dsim_plugins.published"),
    ("published_juodelyte", "dsim_plugins.published_juodelyte"),
    ("own_matrices", "dsim_plugins.own_matrices"),
    ("npz_datasets", "dsim_plugins.npz_datasets"),
    ("medmnist_datasets", "dsim_plugins.medmnist_datasets"),
    ("folder_datasets", "dsim_plugins.folder_datasets"),
    ("near_duplicates", "dsim_plugins.near_duplicates"),
    ("timm_backbones", "dsim_plugins.timm_backbones"),
    ("rank_aggregation", "dsim_plugins.rank_aggregation"),
    ("task2vec", "dsim_plugins.task2vec"),
    ("otdd", "dsim_plugins.otdd"),
    ("model_scores", "dsim_plugins.model_scores"),
    ("meta_predictor", "dsim_plugins.meta_predictor"),
    ("prior_evidence", "dsim_plugins.prior_evidence"),
    ("small_cnn", "dsim_plugins.small_cnn"),
    ("mobilenet_v1", "dsim_plugins.mobilenet_v1"),
    ("cifar_resnet", "dsim_plugins.cifar_resnet"),
    ("torchvision_backbones", "dsim_plugins.torchvision_backbones"),
    ("finetune", "dsim_plugins.finetune"),
    ("linear_probe", "dsim_plugins.linear_probe"),
    ("moment_init", "dsim_plugins.moment_init"),
    ("domain_sources", "dsim_plugins.domain_sources"),
    ("radiomics", "dsim_plugins.radiomics"),
    ("filter_structure", "dsim_plugins.filter_structure"),
    ("filter_figures", "dsim_plugins.filter_figures"),
    ("results_store", "dsim_plugins.results_store"),
    ("mlflow_tracker", "dsim_plugins.mlflow_tracker"),
)

#: the built-in plugins that add CLI commands (``dsim_register_commands``): the overview (``dsim
#: --help``) loads only these when no third-party plugin is installed (a test keeps the list equal
#: to the built-ins that implement the hook)
COMMAND_PLUGINS: tuple[str, ...] = ("filter_figures",)

#: the predictor ``dsim rank`` uses when no fitted predictor is chosen
DEFAULT_PREDICTOR = "rank-aggregation"
#: the learned predictor ``dsim rank`` uses (fitted on every known result) and ``dsim predictor
#: fit`` fits by default: a shrunk track record plus evidence weighed by held-out reliability
LEARNED_PREDICTOR = "prior-evidence"
#: the measures whose predictors-of-one the evaluation suite reports beside the learned predictor
SUITE_MEASURES = ("expert", "task2vec")
#: the backbone ``dsim validate`` and ``dsim pretrain`` train by default (CPU-scale, 28 px)
DEFAULT_BACKBONE = "smallcnn"
#: the transfer strategy ``dsim validate`` runs by default
DEFAULT_STRATEGY = "finetune"
#: the from-scratch baseline strategy whose AUC is AUC(T) of transferability T
BASELINE_STRATEGY = "scratch"
#: the weights prefix of a checkpoint named by timm's pretrained tag (``timm:resnet50.a1_in1k``)
TIMM_WEIGHTS = "timm:"
#: the probe network image measures use by default
DEFAULT_PROBE = "resnet18"
#: images per dataset that image measures of a ranking look at (a seeded stratified subsample)
DEFAULT_MAX_SAMPLES = 1000
#: fine-tuning defaults (cats-scans: Adam, class weights, early stopping; here at 28 px)
DEFAULT_TRAIN: Mapping[str, Any] = {
    "epochs": 30,
    "batch_size": 64,
    "lr": 1e-3,
    "patience": 6,
    "image_size": 28,
}
#: source pretraining defaults: longer, to reach (near) convergence as cats-scans did
DEFAULT_PRETRAIN: Mapping[str, Any] = {
    "epochs": 30,
    "batch_size": 128,
    "lr": 2e-3,
    "patience": 5,
    "image_size": 28,
}
