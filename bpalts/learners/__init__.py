"""Learners: ``torch.nn.Module`` classes, one family per module. Importing this package registers
every family's methods with :mod:`bpalts.registry`."""
from bpalts.learners.base import DivergenceError, Learner
from bpalts.learners.widths import hidden_sizes, layer_sizes
from bpalts.learners.backprop import BackpropMLP  # registers "backprop"
from bpalts.learners.hebbian import HebbianMLP, SoftHebbMLP  # registers the Hebbian family
from bpalts.learners.softhebb_conv import SoftHebbConvNet  # registers "softhebb-conv"
from bpalts.learners.predictive_coding import BidirectionalPC, IncrementalPC, PCNetwork  # registers pc, pc-adaptive, ipc, pc-bidir
from bpalts.learners.reservoir import EchoStateNetwork  # registers reservoir, reservoir-best
from bpalts.learners.forward_forward import ForwardForward  # registers ff, ff-collab
from bpalts.learners.feedback_alignment import PEPITA, FeedbackAlignmentMLP  # registers pepita, fa, dfa

__all__ = [
    "BackpropMLP", "BidirectionalPC", "DivergenceError", "EchoStateNetwork", "FeedbackAlignmentMLP",
    "ForwardForward",
    "HebbianMLP", "IncrementalPC", "Learner", "PCNetwork", "PEPITA", "SoftHebbConvNet", "SoftHebbMLP",
    "hidden_sizes", "layer_sizes",
]
