"""Active learning: choose uncertain, diverse structures (:mod:`.selection`) and label them with a reference
method (:mod:`.oracle`). See ``docs/active-learning.md``."""

from jaxatom.learn.oracle import LabelResult, OracleConfig, append_labels, label, labeled_ids, structure_id
from jaxatom.learn.selection import METHODS, select, structure_features

__all__ = [
    "LabelResult",
    "METHODS",
    "OracleConfig",
    "append_labels",
    "label",
    "labeled_ids",
    "select",
    "structure_features",
    "structure_id",
]
