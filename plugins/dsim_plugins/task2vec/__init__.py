"""Task2Vec (Achille et al. 2019, "Task2Vec: Task Embedding for Meta-Learning"; reference
awslabs/aws-cv-task2vec): a dataset is the diagonal Fisher information of a probe network's
filters; two datasets are close when they use the same filters. The ``task2vec`` measure and the
functions it is made of (fisher, variational, distance, probe); docs/measures.md has the details.
"""

from __future__ import annotations

import dsim

from .distance import asymmetric_distance, symmetric_distance
from .fisher import canonical_labels, task2vec_embedding
from .measure import Task2Vec
from .probe import _Probe, _set_bn
from .settings import DEFAULTS, Task2VecError, resolve_precision

__all__ = [
    "DEFAULTS",
    "Task2Vec",
    "Task2VecError",
    "asymmetric_distance",
    "canonical_labels",
    "resolve_precision",
    "symmetric_distance",
    "task2vec_embedding",
    "_Probe",
    "_set_bn",
]


@dsim.hookimpl
def dsim_register_measures():
    return [Task2Vec()]
