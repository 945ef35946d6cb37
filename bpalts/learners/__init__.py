"""Learners: ``torch.nn.Module`` classes, one family per module. Importing this package registers
every family's methods with :mod:`bpalts.registry`."""
from bpalts.learners.base import DivergenceError, Learner
from bpalts.learners.widths import hidden_sizes, layer_sizes
from bpalts.learners.backprop import BackpropMLP  # registers "backprop"
from bpalts.learners.hebbian import HebbianMLP, SoftHebbMLP  # registers the Hebbian family
from bpalts.learners.softhebb_conv import SoftHebbConvNet  # registers "softhebb-conv"

__all__ = ["BackpropMLP", "DivergenceError", "HebbianMLP", "Learner", "SoftHebbConvNet", "SoftHebbMLP", "hidden_sizes", "layer_sizes"]
