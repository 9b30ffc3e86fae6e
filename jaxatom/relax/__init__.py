"""Batched geometry optimisation on the device: FIRE over many structures at once, with optional cell relaxation
under a target pressure. See ``docs/relaxation.md``."""

from jaxatom.relax.cell import CELL_MODES
from jaxatom.relax.driver import RelaxResult, relax_batch
from jaxatom.relax.fire import Fire, FireState, fire

__all__ = ["relax_batch", "RelaxResult", "CELL_MODES", "fire", "Fire", "FireState"]
