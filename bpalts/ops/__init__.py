"""Hot ops. Each op validates its inputs, picks a backend (``reference``, ``triton``, ``cpp``) and
runs it; the plain-PyTorch reference lives beside the dispatch in the op's own module."""
from bpalts.ops.hebbian_update import (
    HEBBIAN_RULES,
    hebbian_state,
    hebbian_update,
    hebbian_update_reference,
)
from bpalts.ops.softwta_update import softwta_update, softwta_update_reference
from bpalts.ops.softwta_conv_update import softwta_conv_update, softwta_conv_update_reference
from bpalts.ops.pc_relax import PCRelaxResult, pc_relax, pc_relax_reference
from bpalts.ops.pc_weight_update import PCWeightUpdate, pc_weight_update, pc_weight_update_reference
from bpalts.ops.ff_layer_step import FFStep, ff_layer_step, ff_layer_step_reference
from bpalts.ops.reservoir_run import image_sequence, reservoir_run, reservoir_run_reference

__all__ = [
    "FFStep",
    "HEBBIAN_RULES",
    "PCRelaxResult",
    "PCWeightUpdate",
    "pc_relax",
    "pc_relax_reference",
    "pc_weight_update",
    "pc_weight_update_reference",
    "reservoir_run",
    "reservoir_run_reference",
    "ff_layer_step",
    "ff_layer_step_reference",
    "hebbian_state",
    "hebbian_update",
    "hebbian_update_reference",
    "image_sequence",
    "softwta_conv_update",
    "softwta_conv_update_reference",
    "softwta_update",
    "softwta_update_reference",
]
