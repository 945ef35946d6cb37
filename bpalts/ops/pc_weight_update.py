r"""Predictive-coding weight update from relaxed states and errors (local, Hebbian-like).

With the conventions of :mod:`bpalts.ops.pc_relax` (``W_l`` is ``(n_l, n_{l-1})``, ``e_l`` the
errors and ``x_l`` the states after relaxation, ``B`` the batch size):

.. math::

    \Delta W_l = \tfrac1B\, e_l^\top \tilde f(p_{l-1}),\qquad
    \Delta b_l = \tfrac1B \sum_b e_{l,b},\qquad
    \tilde f = \mathrm{id}\ (l = 1),\ f\ (l \ge 2),

(``= -\partial \bar F / \partial W_l``, the negative gradient of the batch-mean energy), with the
presynaptic activity ``p_0 = x`` and ``p_l = x_l`` (``presynaptic="states"``, the standard rule) or
``p_l = x_l - e_l = mu_l`` (``"predictions"``: the fixed-prediction assumption of Millidge et al.
2020 / Song et al. 2020, which makes the update exactly backprop's; see ``pc_relax``).
Whittington and Bogacz, Neural Computation 2017; Millidge, Tschantz, Buckley 2020.

Feedback weights (``feedback``, ``B_l`` shaped like ``W_l``) are learned with
``feedback_rule="same"``: ``Delta B_l = Delta W_l``, the same local update (the rule of Millidge,
Tschantz, Seth and Buckley, "Relaxing the constraints on predictive coding models", 2020, written
for ``B_l`` stored in ``W_l``'s orientation; with weight decay this is Kolen-Pollack learning).
``feedback_rule=None`` leaves them alone. ``feedback[0]`` (unused by relaxation) may be ``None``.

``lr=None``: the updates are returned as fresh tensors (e.g. to feed an optimiser).
``lr`` a float: **in place**, ``W_l += lr * Delta W_l`` (and ``b_l``, ``B_l`` likewise); the
returned tuple then holds the updated tensors themselves.

Backends: ``reference`` (plain PyTorch, float32/64); ``cpp``: ``f(p)`` and the bias column means
fused in C++ (``csrc/pc_weight_update.cpp``), the GEMM in torch (MKL), applied in place with
``addmm_`` when ``lr`` is given (no ``Delta W`` temporary); ``triton``: the reference's few large
GEMMs already run as single cuBLAS calls on CUDA, so it runs the torch formulation with the
in-place ``addmm_`` (no separate kernel; the relaxation is where the launches are).
"""
from __future__ import annotations

from contextlib import nullcontext
from typing import NamedTuple, Sequence

import torch

from bpalts._backend import cpp_module, resolve_backend
from bpalts._checks import FLOAT32_ONLY, FLOAT32_OR_64, check_choice, check_in_place, check_scalar, check_tensor
from bpalts._checks import one_finite_sync
from bpalts.ops.pc_relax import ACTIVATIONS, _check_rows, act, check_network

FEEDBACK_RULES = (None, "same")
PRESYNAPTIC = ("states", "predictions")


class PCWeightUpdate(NamedTuple):
    """Per layer: ``weights[l-1]`` (``Delta W_l`` or the updated ``W_l``), ``biases`` (or ``None``),
    ``feedback`` (or ``None`` when no feedback rule is used)."""

    weights: list
    biases: list | None
    feedback: list | None


def _presyn(activation, x, states, errors, presynaptic):
    """``f~(p_{l-1})`` for ``l = 1..L``: ``x`` itself, then ``f(x_l)`` or ``f(x_l - e_l)``."""
    out = [x]
    for s, e in zip(states[:-1], errors[:-1]):
        out.append(act(activation, s - e if presynaptic == "predictions" else s))
    return out


def pc_weight_update_reference(weights, x, states, errors, *, lr=None, biases=None, activation="tanh",
                               feedback=None, feedback_rule=None, presynaptic="states") -> PCWeightUpdate:
    """The specification of :func:`pc_weight_update` (plain PyTorch, no input checks)."""
    B = x.shape[0]
    pre = _presyn(activation, x, states, errors, presynaptic)
    dW = [e.T @ p / B for e, p in zip(errors, pre)]
    db = [e.mean(0) for e in errors] if biases is not None else None
    dB = None
    if feedback_rule == "same" and feedback is not None:
        dB = [None if Bm is None else d.clone() for Bm, d in zip(feedback, dW)]
    if lr is None:
        return PCWeightUpdate(dW, db, dB)
    for W, d in zip(weights, dW):
        W += lr * d
    if biases is not None:
        for b, d in zip(biases, db):
            b += lr * d
    if dB is not None:
        for Bm, d in zip(feedback, dB):
            if Bm is not None:
                Bm += lr * d
    return PCWeightUpdate(list(weights), None if biases is None else list(biases),
                          None if dB is None else list(feedback))


def pc_weight_update(weights, x, states, errors, *, lr=None, biases=None, activation="tanh",
                     feedback=None, feedback_rule=None, presynaptic="states", backend="auto",
                     check_finite_input=True) -> PCWeightUpdate:
    """The PC weight (and bias, feedback) update (math: module docstring).

    Args:
        weights: list of ``L`` tensors ``W_l`` ``(n_l, n_{l-1})``.
        x: the input ``x_0`` (batch, n_0).
        states, errors: lists of ``L`` tensors ``(batch, n_l)``, e.g. from :func:`pc_relax`.
        lr: ``None`` (return the updates) or a float (apply in place, ``W += lr * dW``).
        biases: optional list of ``L`` bias vectors ``(n_l,)``; their update is the mean error.
        activation: as in ``pc_relax``.
        feedback: optional list of ``L`` feedback matrices (entry 0 may be ``None``).
        feedback_rule: ``None`` (feedback fixed) or ``"same"`` (``dB_l = dW_l``).
        presynaptic: ``"states"`` (``x_l``) or ``"predictions"`` (``x_l - e_l``).
        backend: ``"auto"``, ``"reference"``, ``"triton"`` or ``"cpp"``.
    Returns:
        :class:`PCWeightUpdate` ``(weights, biases, feedback)``.
    """
    dtypes = FLOAT32_OR_64
    with one_finite_sync() if check_finite_input else nullcontext():  # one sync for the checks below
        L = check_network(weights, x, biases, feedback, dtypes, check_finite_input)
        which = resolve_backend(backend, x.device)
        if which == "triton":
            check_tensor("x", x, ("batch", "features"), FLOAT32_ONLY)
        for name, lst in (("states", states), ("errors", errors)):
            if isinstance(lst, torch.Tensor) or not isinstance(lst, Sequence) or len(lst) != L:
                raise TypeError(f"{name} must be a list of {L} (batch, n_l) tensors, got "
                                f"{type(lst).__name__}" + (f" of length {len(lst)}" if isinstance(lst, Sequence) else ""))
            for i, t in enumerate(lst):
                _check_rows(f"{name}[{i}]", t, x, weights[i].shape[0], "units", dtypes, check_finite_input)
        if lr is not None:
            lr = check_scalar("lr", lr, dtype=x.dtype)
            learned = feedback if feedback_rule is not None else None  # else left alone
            for name, lst in (("weights", weights), ("biases", biases), ("feedback", learned)):
                for i, t in enumerate(lst or ()):
                    if t is not None:  # updated in place when lr is given
                        check_in_place(f"{name}[{i}]", t)
        activation = check_choice("activation", activation, ACTIVATIONS)
        if feedback_rule not in FEEDBACK_RULES:
            raise ValueError(f"feedback_rule must be one of {FEEDBACK_RULES}, got {feedback_rule!r}")
        if feedback_rule is not None and feedback is None:
            raise ValueError(f"feedback_rule={feedback_rule!r} needs feedback (a list of {L} matrices)")
        presynaptic = check_choice("presynaptic", presynaptic, PRESYNAPTIC)
    kw = dict(lr=lr, biases=biases, activation=activation, feedback=feedback,
              feedback_rule=feedback_rule, presynaptic=presynaptic)
    with torch.no_grad():
        if which == "reference":
            return pc_weight_update_reference(weights, x, states, errors, **kw)
        if which == "cpp":
            return _update_fused(weights, x, states, errors, **kw, cpp=True)
        return _update_fused(weights, x, states, errors, **kw, cpp=False)


def _update_fused(weights, x, states, errors, *, lr, biases, activation, feedback, feedback_rule,
                  presynaptic, cpp):
    """cpp / triton backends: presynaptic activity (and bias means) fused in C++ on the CPU, one GEMM
    per layer, applied in place with ``addmm_`` when ``lr`` is given."""
    B = x.shape[0]
    if cpp:
        C = cpp_module()
        src = [s.detach().contiguous() for s in states[:-1]]
        pre = [x] + [torch.empty(s.shape, dtype=s.dtype) for s in src]
        if src:
            sub = [e.detach().contiguous().numpy() for e in errors[:-1]] if presynaptic == "predictions" else None
            C.pc_act([s.numpy() for s in src], sub, [p.numpy() for p in pre[1:]], None,
                     ACTIVATIONS.index(activation))
    else:
        pre = _presyn(activation, x, states, errors, presynaptic)
    learn_fb = feedback_rule == "same" and feedback is not None
    if biases is not None:
        if cpp:
            ec = [e.detach().contiguous() for e in errors]
            db = [e.new_empty((1, e.shape[1])) for e in ec]
            C.pc_colmean([e.numpy() for e in ec], [d.numpy() for d in db])
            db = [d[0] for d in db]
        else:
            db = [e.mean(0) for e in errors]
    if lr is None:
        dW = [torch.mm(e.T, p).div_(B) for e, p in zip(errors, pre)]
        dB = [None if Bm is None else d.clone() for Bm, d in zip(feedback, dW)] if learn_fb else None
        return PCWeightUpdate(dW, db if biases is not None else None, dB)
    for i, (e, p) in enumerate(zip(errors, pre)):
        weights[i].addmm_(e.T, p, alpha=lr / B)
        if learn_fb and feedback[i] is not None:
            feedback[i].addmm_(e.T, p, alpha=lr / B)
    if biases is not None:
        for b, d in zip(biases, db):
            b.add_(d, alpha=lr)
    return PCWeightUpdate(list(weights), None if biases is None else list(biases),
                          list(feedback) if learn_fb else None)
