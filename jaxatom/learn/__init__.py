"""Active learning (layer 10): ensembles explore with uncertainty-gated MD, a diverse uncertain batch is chosen
(:mod:`.selection`), an oracle (any ASE calculator; GFN2-xTB by default) labels it (:mod:`.oracle`), and the
ensemble is retrained — ``jaxatom learn`` (:mod:`.loop`). See ``docs/active-learning.md``."""

from jaxatom.learn.config import ExploreConfig, LearnConfig, SelectConfig, load_learn_config
from jaxatom.learn.loop import learn
from jaxatom.learn.oracle import LabelResult, OracleConfig, append_labels, label, labeled_ids, structure_id
from jaxatom.learn.selection import METHODS, select, structure_features

__all__ = [
    "ExploreConfig",
    "LabelResult",
    "LearnConfig",
    "METHODS",
    "OracleConfig",
    "SelectConfig",
    "append_labels",
    "label",
    "labeled_ids",
    "learn",
    "load_learn_config",
    "select",
    "structure_features",
    "structure_id",
]
