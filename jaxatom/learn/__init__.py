"""Active learning (layer 10): ensembles explore with uncertainty-gated MD, a diverse uncertain batch is chosen,
an oracle (any ASE calculator; GFN2-xTB by default) labels it, and the ensemble is retrained — ``jaxatom learn``."""

from jaxatom.learn.config import ExploreConfig, LearnConfig, SelectConfig, load_learn_config
from jaxatom.learn.loop import learn

__all__ = ["ExploreConfig", "LearnConfig", "SelectConfig", "learn", "load_learn_config"]
