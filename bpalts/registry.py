"""The registry of trainable methods that ``bpalts-compare`` knows by name.

Each learner family registers its methods when its module is imported (``bpalts.learners``
imports them all). A :class:`MethodSpec` says how to build the learner for a given list of layer
sizes and the training budget of the ``full`` preset (the budget at which the method's accuracy
target is stated).
"""
from __future__ import annotations

import numbers
from dataclasses import dataclass, field
from typing import Callable

import torch.nn as nn

from bpalts._checks import check_flag


@dataclass(frozen=True)
class MethodSpec:
    """How to build and train one registered method.

    ``build(sizes, backend=..., seed=...)`` returns a learner (an ``nn.Module`` with ``forward``,
    ``predict`` and ``train_step``) for layer widths ``sizes`` (input first, classes last).
    """

    name: str
    build: Callable[..., nn.Module]
    description: str
    batch_size: int = 64
    full_epochs: int = 10
    # Methods whose architecture is fixed (e.g. a conv net) ignore the depth; listed here so the
    # harness runs them once instead of once per depth.
    fixed_depth: bool = False
    extra: dict = field(default_factory=dict)
    # The fewest weight layers the method can be built with (e.g. 2 for a method that needs a
    # hidden layer); the harness refuses a smaller depth before it loads any data.
    min_depth: int = 1

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name:
            raise TypeError(f"name must be a non-empty string, got {self.name!r}")
        if not callable(self.build):
            raise TypeError(f"build must be callable, got {type(self.build).__name__}")
        if not isinstance(self.description, str):
            raise TypeError(f"MethodSpec {self.name!r}: description must be a string, "
                            f"got {type(self.description).__name__}")
        check_flag(f"MethodSpec {self.name!r}: fixed_depth", self.fixed_depth)
        if not isinstance(self.extra, dict):
            raise TypeError(f"MethodSpec {self.name!r}: extra must be a dict, got {type(self.extra).__name__}")
        for attr in ("batch_size", "full_epochs", "min_depth"):
            value = getattr(self, attr)
            if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
                raise ValueError(f"MethodSpec {self.name!r}: {attr} must be an int >= 1, got {value!r}")


_REGISTRY: dict[str, MethodSpec] = {}


def register_method(spec: MethodSpec) -> MethodSpec:
    """Add ``spec`` to the registry; a second registration under the same name is an error."""
    if not isinstance(spec, MethodSpec):
        raise TypeError(f"spec must be a MethodSpec, got {type(spec).__name__}")
    if spec.name in _REGISTRY and _REGISTRY[spec.name] is not spec:
        raise ValueError(f"a method named {spec.name!r} is already registered")
    _REGISTRY[spec.name] = spec
    return spec


def method_names() -> list[str]:
    """Names of every registered method, in registration order."""
    _load_families()
    return list(_REGISTRY)


def get_method(name: str) -> MethodSpec:
    """The spec registered as ``name``; an unknown name lists the registered ones."""
    if not isinstance(name, str):
        raise TypeError(f"name must be a method name (str), got {type(name).__name__} {name!r}")
    _load_families()
    try:
        return _REGISTRY[name]
    except KeyError:
        raise ValueError(
            f"unknown method {name!r}; registered methods: {', '.join(_REGISTRY) or '(none)'}"
        ) from None


def _load_families() -> None:
    # Importing the learners package runs every family's register_method calls.
    import bpalts.learners  # noqa: F401
