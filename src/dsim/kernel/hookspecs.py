"""dsim's hook specifications: every extension point in one flat module.

A plugin is a module (or object) with functions named like these hooks and decorated with
``dsim.hookimpl``; it is registered through the ``dsim`` entry-point group of its package::

    # pyproject.toml of a plugin package
    [project.entry-points.dsim]
    my_plugin = "my_package.dsim_plugin"

The built-in plugins under ``plugins/dsim_plugins`` are registered exactly this way.
``register_*`` hooks return a list (an empty list or None when the plugin has nothing of that
kind); dsim collects the lists of every plugin, so one plugin may provide several kinds.
A plugin that raises is reported by name and skipped; the other plugins keep working.
"""

from __future__ import annotations

import pluggy

hookspec = pluggy.HookspecMarker("dsim")
hookimpl = pluggy.HookimplMarker("dsim")


@hookspec
def dsim_register_cards():
    """Dataset cards (:class:`dsim.DatasetCard`) this plugin knows about.

    Example::

        @hookimpl
        def dsim_register_cards():
            return [DatasetCard(name="kvasir", aliases=("kvasir-v2",), origin="medical",
                                modality="endoscopy", channels=3, num_classes=8,
                                loader="image-folder", loader_args={"path": "~/data/kvasir"})]
    """


@hookspec
def dsim_register_loaders():
    """Dataset loaders (:class:`dsim.DatasetLoader`): read images for a card or a user path.

    Example::

        @hookimpl
        def dsim_register_loaders():
            return [NpyLoader()]
    """


@hookspec
def dsim_register_overlap_checks():
    """Overlap checks (:class:`dsim.OverlapCheck`): find a target's own images in a source.

    Example::

        @hookimpl
        def dsim_register_overlap_checks():
            return [ExactMatch()]
    """


@hookspec
def dsim_register_backbones():
    """Backbone factories (:class:`dsim.BackboneFactory`) that create networks by name.

    Example::

        @hookimpl
        def dsim_register_backbones():
            return [MyRadImageNetFactory()]  # handles("radimagenet-resnet50") -> True
    """


@hookspec
def dsim_register_measures():
    """Similarity or transferability measures (:class:`dsim.Measure`).

    Example::

        @hookimpl
        def dsim_register_measures():
            return [MeanIntensity()]
    """


@hookspec
def dsim_register_strategies():
    """Transfer strategies (:class:`dsim.Strategy`) used by ``dsim validate``.

    Example::

        @hookimpl
        def dsim_register_strategies():
            return [LinearProbe(C=1.0)]
    """


@hookspec
def dsim_register_predictors():
    """Predictor classes (subclasses of :class:`dsim.Predictor`), created by name.

    Example::

        @hookimpl
        def dsim_register_predictors():
            return [MyGradientBoostedRanker]
    """


@hookspec
def dsim_register_checkpoints():
    """Checkpoint cards (:class:`dsim.CheckpointCard`): pretrained networks that can be ranked
    as candidate sources (``dsim rank --sources``, ``dsim zoo``).

    Example::

        @hookimpl
        def dsim_register_checkpoints():
            return [CheckpointCard(name="radimagenet-resnet50", architecture="resnet50",
                                   weights="file:RadImageNet-ResNet50_notop.pth",
                                   pretrained_on="radimagenet", licence="see RadImageNet")]
    """


@hookspec
def dsim_register_reproductions():
    """Reproductions (:class:`dsim.Reproduction`) of published analyses, recomputed from the
    results a plugin ships (``dsim reproduce NAME``).

    Example::

        @hookimpl
        def dsim_register_reproductions():
            return [MyPaperReproduction()]  # name = "my-paper"
    """


@hookspec
def dsim_register_trackers():
    """Experiment trackers (:class:`dsim.Tracker`) that ``--track NAME`` (``dsim validate``,
    ``dsim pretrain``) logs runs to, and that ``dsim results import`` can read runs back from.

    Example::

        @hookimpl
        def dsim_register_trackers():
            return [MyWandbTracker()]  # name = "wandb"; dsim validate ... --track wandb
    """


@hookspec
def dsim_known_results():
    """Measured transfer results (:class:`dsim.TransferResult`) this plugin brings as prior
    knowledge, e.g. a paper's released table.

    Example::

        @hookimpl
        def dsim_known_results():
            return [TransferResult("imagenet", "chest", fold=1, auc=0.97, origin="my-paper")]
    """


@hookspec
def dsim_known_measure_values():
    """Measure values (:class:`dsim.MeasureValue`) known without computing them, e.g. a paper's
    Task2Vec distances.

    Example::

        @hookimpl
        def dsim_known_measure_values():
            return [MeasureValue("task2vec", "imagenet", "chest", 0.41, origin="my-paper")]
    """


@hookspec
def dsim_register_commands(app):
    """Add commands to the ``dsim`` command line: ``app`` is its ``typer.Typer``. Called only when
    the command line needs them (``dsim --help``, or a command dsim itself does not have), so
    that ``dsim rank`` does not pay for them; import heavy modules inside the command. The
    filter-structure plugin adds ``dsim filters`` this way.

    Example::

        @hookimpl
        def dsim_register_commands(app):
            @app.command("hello", help="Say hello.")
            def hello(name: str = typer.Option("world", help="Whom to greet.")):
                print(f"hello {name}")
    """


@hookspec
def dsim_known_state():
    """Tokens (hashable values) that change whenever what this plugin's ``dsim_known_results`` or
    ``dsim_known_measure_values`` would return changes, e.g. the modification time and size of
    the file it reads. dsim keeps the known results in memory and reads them again when a token
    changes, so that a result written in this process (``dsim.validate``) is seen by the next
    ``dsim.rank``. A plugin whose known results never change needs no implementation.

    Example::

        @hookimpl
        def dsim_known_state():
            st = MY_TABLE.stat()
            return [(str(MY_TABLE), st.st_mtime_ns, st.st_size)]
    """


@hookspec
def dsim_run_started(spec):
    """Called when a fine-tuning run (:class:`dsim.RunSpec`) starts.

    Example::

        @hookimpl
        def dsim_run_started(spec):
            print("starting", spec.label)
    """


@hookspec
def dsim_run_finished(result):
    """Called with the :class:`dsim.RunResult` of every finished run (e.g. log it to a tracker).

    Example::

        @hookimpl
        def dsim_run_finished(result):
            mlflow.log_metrics(dict(result.metrics))
    """


@hookspec
def dsim_run_epoch(spec, epoch):
    """Called after every training epoch of a fine-tuning run, in the process that trains it (a
    Ray worker under ``--executor ray``: the driver's plugins do not hear it there; the same
    curve comes back with the result, as :attr:`dsim.RunResult.history`). ``epoch`` is a dict:
    ``epoch`` (1-based), ``train_loss``, ``val_loss`` and ``val_auc`` (of the validation split).

    Example::

        @hookimpl
        def dsim_run_epoch(spec, epoch):
            print(spec.label, epoch["epoch"], epoch["val_loss"], epoch["val_auc"])
    """


@hookspec
def dsim_run_failed(spec, error):
    """Called when a run fails; ``error`` is the one-line message shown to the user.

    Example::

        @hookimpl
        def dsim_run_failed(spec, error):
            alert(f"{spec.label} failed: {error}")
    """


@hookspec
def dsim_pretrain_finished(checkpoint, meta):
    """Called on the driver when ``dsim validate`` has pretrained a network for its runs (once
    per pretraining job it ran; a checkpoint taken from the cache is not announced again).
    ``checkpoint`` is the file's :class:`pathlib.Path`, ``meta`` the dict saved beside it (source,
    backbone, seed, the training curve ``history`` ...; empty when the file is on a worker only).

    Example::

        @hookimpl
        def dsim_pretrain_finished(checkpoint, meta):
            print("pretrained", meta.get("backbone"), "on", meta.get("source"), "->", checkpoint)
    """


@hookspec
def dsim_ranking_done(ranking):
    """Called with every :class:`dsim.Ranking` that ``dsim.rank`` returns.

    Example::

        @hookimpl
        def dsim_ranking_done(ranking):
            print(ranking.target, ranking.sources[:3])
    """
