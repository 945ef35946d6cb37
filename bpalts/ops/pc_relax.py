r"""Predictive-coding relaxation: gradient descent of the energy on the value nodes.

Row-vector convention, weights shaped like ``torch.nn.Linear``: ``W_l`` is ``(n_l, n_{l-1})``.
Value nodes ``x_0`` (the input, fixed), ``x_1 .. x_L`` (``x_L`` the output). Predictions, errors
and energy (per sample; ``energy`` reports the batch mean):

.. math::

    \mu_1 = x_0 W_1^\top + b_1,\qquad \mu_l = f(x_{l-1}) W_l^\top + b_l\ (l \ge 2),\qquad
    e_l = x_l - \mu_l,\qquad F = \sum_{l=1}^{L} \tfrac12 \|e_l\|^2 .

(The input is not passed through ``f``; the output is linear.) One relaxation step, for every
hidden layer ``l < L`` at once, from the previous step's states only:

.. math::

    x_l \mathrel{+}= \gamma \bigl(-e_l + f'(x_l) \odot (e_{l+1} W_{l+1})\bigr)
    \qquad (= -\gamma\,\partial F / \partial x_l),

with ``B_{l+1}`` in place of ``W_{l+1}`` when ``feedback`` is given (learned / separate feedback
weights). Whittington and Bogacz, "An approximation of the error backpropagation algorithm in a
predictive coding network with local Hebbian synaptic plasticity", Neural Computation 2017;
Millidge, Tschantz and Buckley, "Predictive coding approximates backprop along arbitrary
computation graphs", Neural Computation 2022 (arXiv 2020); Song, Lukasiewicz, Xu and Bogacz,
"Can the brain do backpropagation? Exact implementation of backpropagation in predictive coding
networks", NeurIPS 2020.

Output (``output=``)
--------------------
``"clamp"`` (default): ``x_L = target`` throughout. With ``output_energy="mse"``,
``e_L = target - mu_L``; with ``"ce"`` the output term of ``F`` is the cross-entropy
``-sum target * log softmax(mu_L)`` and ``e_L = target - softmax(mu_L)`` (= minus its gradient in
``mu_L`` when each target row sums to 1, as one-hot and soft labels do; the hidden updates and
the weight update keep the same form). Every backend uses this ``e_L`` (and ``softmax(x_L) -
target`` as the nudged ``ce`` gradient) whatever the rows sum to: with other targets it is not
the gradient of that cross-entropy.

Nudging (``"nudge_positive"``, ``"nudge_negative"``, ``"nudge_centred"``): ``x_L`` is free, with
``e_L = x_L - mu_L`` and the extra energy ``beta_s * loss(x_L, target)`` (``loss`` = ``mse``:
``||x_L - target||^2 / 2``; ``ce``: ``-sum target * log softmax(x_L)``), so
``x_L += gamma (-e_L - beta_s * dloss/dx_L)``. ``beta_s = +beta`` (positive) or ``-beta``
(negative), as in equilibrium propagation (Scellier and Bengio 2017). **Centred** (Laborieux et
al., "Scaling equilibrium propagation to deep ConvNets by drastically reducing its gradient
estimator bias", Frontiers in Neuroscience 2021): two relaxations from the same initial states, one
with ``+beta`` and one with ``-beta`` (run together as one batch of ``2B`` rows); the result holds
``errors = (e(+beta) - e(-beta)) / 2``, ``states = (x(+beta) + x(-beta)) / 2`` and the energy
averaged over both. Near the feed-forward equilibrium ``e(+-beta) = +-beta g + O(beta^2)``, so
:func:`bpalts.ops.pc_weight_update` on a centred result estimates ``beta`` times the clamped
update with an ``O(beta^3)`` bias instead of the one-sided ``O(beta^2)``. Errors are **not**
divided by ``beta``: scale the learning rate by ``1/beta`` (``-1/beta`` for ``nudge_negative``).
The reported energy in nudge modes includes the ``beta_s * loss`` term.

Other options
-------------
``init``: ``"feedforward"`` (``x_l = mu_l`` from a forward pass: hidden errors start at 0),
``"zeros"``, or a list of state tensors (``L`` of them, ``(B, n_l)``; the last is ignored when the
output is clamped; ``L - 1`` hidden states are accepted too), copied, never modified.
``fixed_predictions=True``: the fixed-prediction assumption (Millidge et al. 2020; Song et al.
2020): ``mu_l`` and ``f'(x_l)`` stay at their feed-forward values during relaxation. With
``step_size=1``, clamped MSE output and ``steps >= L - 1`` the errors are then exactly the
backprop deltas ``-dLoss/d(pre-activation)``, so the PC weight update (with
``presynaptic="predictions"``) equals the negative backprop gradient of the batch-mean of
``||target - output||^2 / 2``.
``precision``: ``"fp32"`` (default) or ``"tf32"``: every GEMM's operands rounded to TF32 (tensor
cores on the Triton backend, emulated by rounding on the reference and C++ backends; see
:mod:`bpalts._precision`). float32 only. The relaxation tolerates it: the states move by steps
of ``gamma`` times errors whose relative error is about 1e-3. ``"tf32x3"``: fp32-level products
on tensor cores (Triton; fp32 on the CPU backends).
``tol``: stop after step ``t`` when ``|F_t - F_{t-1}| <= tol * |F_{t-1}|`` (``F_0`` = energy of
the initial states). ``energy[t-1]`` is ``F_t``, the batch-mean energy after step ``t``; its length
is ``steps_run``. The returned errors belong to the returned states.
Divergence (a non-finite energy) raises :class:`bpalts._checks.DivergenceError` naming the first
such step.

Backends
--------
``reference``: :func:`pc_relax_reference`, plain eager PyTorch (the specification; float32 and
float64). It computes ``mu_1 = x_0 W_1^T + b_1`` once (``x_0`` never changes), as any careful
eager implementation would.
``cpp``: GEMMs in torch (MKL) into preallocated buffers; every elementwise pass of a step fused
in C++ (``csrc/pc_relax.cpp``): one pass per layer computes ``e_l`` and its energy, one pass
applies the state update and refreshes ``f(x_l)`` and ``f'(x_l)``. GEMMs whose result is known
exactly are skipped: a feedback product of an all-zero error, a forward product of a layer that
did not move (after a feed-forward start the error needs ``L - l`` steps to reach layer ``l``, so
short relaxations save up to about half the GEMMs). float32/64.
``triton``: ``kernels/pc_relax.py``: per step, one launch for all the forward GEMMs with the error
and energy in their epilogue, one for all the feedback GEMMs with the state update (and ``f``,
``f'``) in their epilogue; on CUDA the whole step loop is captured in a CUDA graph. From 256
rows (``CUBLAS_MIN_ROWS``; clamped output, no ``tol``) the GEMMs run in cuBLAS instead, with one
fused elementwise launch per step: 1.2-2.2x faster on an H100 (``kernels/pc_relax.py`` has the
figures); ``precision="tf32x3"`` runs as fp32 there (cuBLAS has no 3xTF32). Two one-launch
alternatives, the rows path (``ROWS_MAX_ROWS``) and the persistent path
(``PERSISTENT_MAX_ROWS``), are off: on the H100 they were never the fastest. float32.
"""
from __future__ import annotations

from contextlib import nullcontext
from typing import NamedTuple, Sequence

import torch

from bpalts._backend import cpp_module, resolve_backend
from bpalts._precision import check_precision, mm, operand_rounder
from bpalts._checks import (
    FLOAT32_ONLY,
    FLOAT32_OR_64,
    DivergenceError,
    check_choice,
    check_dense,
    check_finite,
    check_flag,
    check_int,
    check_same,
    check_scalar,
    check_tensor,
    one_finite_sync,
)

ACTIVATIONS = ("tanh", "relu", "leaky_relu", "identity")
OUTPUTS = ("clamp", "nudge_positive", "nudge_negative", "nudge_centred")
OUTPUT_ENERGIES = ("mse", "ce")
INITS = ("feedforward", "zeros")
LEAKY_SLOPE = 0.01


class PCRelaxResult(NamedTuple):
    """``states[l-1]`` = ``x_l`` and ``errors[l-1]`` = ``e_l`` (``(B, n_l)``, ``l = 1..L``, fresh
    memory owned by the result: no input or cached buffer is aliased; the Triton backend returns
    each list's layers as views of one contiguous allocation), ``energy`` (``(steps_run,)``,
    batch-mean energy after each step), ``steps_run``."""

    states: list
    errors: list
    energy: torch.Tensor
    steps_run: int


# --------------------------------------------------------------------------- activations
def act(name: str, v: torch.Tensor) -> torch.Tensor:
    """``f(v)``."""
    if name == "tanh":
        return torch.tanh(v)
    if name == "relu":
        return torch.relu(v)
    if name == "leaky_relu":
        return torch.nn.functional.leaky_relu(v, LEAKY_SLOPE)
    return v


def act_deriv(name: str, v: torch.Tensor, fv: torch.Tensor) -> torch.Tensor:
    """``f'(v)`` (``fv = f(v)`` given, so tanh needs no second tanh)."""
    if name == "tanh":
        return 1 - fv * fv
    if name == "relu":
        return (v > 0).to(v.dtype)
    if name == "leaky_relu":
        return torch.where(v > 0, torch.ones_like(v), torch.full_like(v, LEAKY_SLOPE))
    return torch.ones_like(v)


# --------------------------------------------------------------------------- reference
def _relax_reference(weights, biases, feedback, x, target, states, steps, step_size, activation,
                     clamp, beta_rows, ce, tol, fixed_predictions, precision="fp32"):
    """The step loop (no validation). ``states`` are the initial ``x_1..x_L`` (owned, updated);
    ``beta_rows`` (rows, 1) is the signed nudging strength per row (``None`` when clamped).
    Returns ``(states, errors, energy (steps_run,), steps_run)``."""
    L = len(weights)
    back = feedback if feedback is not None else weights
    mu1 = mm(x, weights[0].T, precision) + (biases[0] if biases is not None else 0)  # x_0 is fixed

    def predict(fs):
        return [mu1] + [mm(fs[i], weights[i + 1].T, precision) + (biases[i + 1] if biases is not None else 0)
                        for i in range(L - 1)]

    def errors_energy(s, mu):
        e = [s[i] - mu[i] for i in range(L - 1)]
        F = sum(0.5 * (v * v).sum(1) for v in e) if e else 0
        if clamp and ce:
            e.append(target - torch.softmax(mu[-1], 1))
            F = F - (target * torch.log_softmax(mu[-1], 1)).sum(1)
        else:
            e.append(s[-1] - mu[-1])
            F = F + 0.5 * (e[-1] * e[-1]).sum(1)
            if not clamp:
                if ce:
                    loss = -(target * torch.log_softmax(s[-1], 1)).sum(1)
                else:
                    loss = 0.5 * ((s[-1] - target) ** 2).sum(1)
                F = F + beta_rows[:, 0] * loss
        return e, F.mean()

    if fixed_predictions:  # mu_l and f'(x_l) frozen at the feed-forward pass
        mu_ff, fs_ff = _feedforward(weights, biases, x, activation, precision)
        dfs = [act_deriv(activation, mu_ff[i], fs_ff[i]) for i in range(L - 1)]
    else:
        fs = [act(activation, v) for v in states[:-1]]
    e, F_prev = errors_energy(states, mu_ff if fixed_predictions else predict(fs))
    energy = []
    for t in range(1, steps + 1):
        if not fixed_predictions:
            dfs = [act_deriv(activation, states[i], fs[i]) for i in range(L - 1)]
        new = [states[i] + step_size * (-e[i] + dfs[i] * mm(e[i + 1], back[i + 1], precision))
               for i in range(L - 1)]
        if clamp:
            new.append(states[-1])
        else:
            d = states[-1] - target if not ce else torch.softmax(states[-1], 1) - target
            new.append(states[-1] + step_size * (-e[-1] - beta_rows * d))
        states = new
        if not fixed_predictions:
            fs = [act(activation, v) for v in states[:-1]]
        e, F = errors_energy(states, mu_ff if fixed_predictions else predict(fs))
        energy.append(F)
        if tol is not None and bool(abs(F - F_prev) <= tol * abs(F_prev)):
            break
        F_prev = F
    return states, e, torch.stack(energy), len(energy)


def _feedforward(weights, biases, x, activation, precision="fp32"):
    """``mu_l`` of the forward pass (``x_l = mu_l``) and ``f(mu_l)`` for the hidden layers."""
    mu, fs = [], []
    h = x
    for i, W in enumerate(weights):
        m = mm(h, W.T, precision) + (biases[i] if biases is not None else 0)
        mu.append(m)
        if i < len(weights) - 1:
            h = act(activation, m)
            fs.append(h)
    return mu, fs


def _initial_states(weights, biases, x, target, init, activation, clamp, precision="fp32"):
    """Fresh initial states ``x_1..x_L`` (output = target when clamped)."""
    if isinstance(init, str):
        if init == "feedforward":
            s = [m.clone() for m in _feedforward(weights, biases, x, activation, precision)[0]]
        else:
            s = [x.new_zeros(x.shape[0], W.shape[0]) for W in weights]
    else:
        s = [v.clone() for v in init]
        if len(s) == len(weights) - 1:
            s.append(target.clone() if clamp else x.new_zeros(x.shape[0], weights[-1].shape[0]))
    if clamp:
        s[-1] = target.clone()
    return s


def _expand(x, target, states, output, beta):
    """Centred nudging runs the +beta and -beta relaxations as one batch of 2B rows."""
    B = x.shape[0]
    if output == "clamp":
        return x, target, states, None
    if output == "nudge_centred":
        x, target = torch.cat([x, x]), torch.cat([target, target])
        states = None if states is None else [torch.cat([v, v]) for v in states]
        beta_rows = torch.cat([x.new_full((B, 1), beta), x.new_full((B, 1), -beta)])
    else:
        beta_rows = x.new_full((B, 1), beta if output == "nudge_positive" else -beta)
    return x, target, states, beta_rows


def _fold(states, errors, output, B):
    if output != "nudge_centred":
        return states, errors
    return ([(v[:B] + v[B:]) * 0.5 for v in states], [(v[:B] - v[B:]) * 0.5 for v in errors])


def _check_energy(energy: torch.Tensor) -> None:
    if energy.is_cuda and torch.cuda.is_current_stream_capturing():
        return  # inside a CUDA-graph capture nothing may sync: the caller checks the replayed energy
    bad = ~torch.isfinite(energy)
    if bool(bad.any()):
        step = int(bad.nonzero()[0, 0]) + 1
        raise DivergenceError(
            f"pc_relax diverged: the energy became non-finite at relaxation step {step} "
            f"(of {energy.numel()} run); lower step_size or check the weights"
        )


def pc_relax_reference(weights, x, target, steps=20, step_size=0.1, *, biases=None, activation="tanh",
                       init="feedforward", output="clamp", beta=0.1, output_energy="mse", tol=None,
                       feedback=None, fixed_predictions=False, precision="fp32") -> PCRelaxResult:
    """The specification of :func:`pc_relax` (plain eager PyTorch, no input checks)."""
    B, clamp = x.shape[0], output == "clamp"
    s0 = _initial_states(weights, biases, x, target, init, activation, clamp, precision)
    xx, tt, s0, beta_rows = _expand(x, target, s0, output, beta)
    states, errors, energy, n = _relax_reference(
        weights, biases, feedback, xx, tt, s0, steps, step_size, activation, clamp, beta_rows,
        output_energy == "ce", tol, fixed_predictions, precision)
    _check_energy(energy)
    states, errors = _fold(states, errors, output, B)
    return PCRelaxResult(states, errors, energy, n)


# --------------------------------------------------------------------------- validation
def check_network(weights, x, biases=None, feedback=None, dtypes=FLOAT32_OR_64, finite=True):
    """``weights`` chain (``W_l`` is ``(n_l, n_{l-1})``, ``n_0`` = input width), ``biases`` /
    ``feedback`` match; all on one device and dtype. Returns ``L``."""
    if isinstance(weights, torch.Tensor) or not isinstance(weights, Sequence) or len(weights) == 0:
        raise TypeError("weights must be a non-empty list of (n_l, n_{l-1}) tensors, "
                        f"got {type(weights).__name__}")
    check_tensor("x", x, ("batch", "features"), dtypes)
    L = len(weights)
    prev = x.shape[1]
    for i, W in enumerate(weights):
        check_tensor(f"weights[{i}]", W, ("units", "inputs"), dtypes)
        check_same(("x", f"weights[{i}]"), (x, W))
        if finite and i == 0:
            check_finite("x", x)  # after the device check: a meta / other-device x names itself
        if W.shape[1] != prev:
            what = "x has" if i == 0 else f"weights[{i - 1}] has"
            raise ValueError(
                f"weights[{i}] has shape {tuple(W.shape)} (units, inputs) but {what} {prev} "
                f"{'features' if i == 0 else 'units'}; weights must chain: W_l is (n_l, n_(l-1))")
        prev = W.shape[0]
        if finite:
            check_finite(f"weights[{i}]", W)
    for name, lst, is_bias in (("biases", biases, True), ("feedback", feedback, False)):
        if lst is None:
            continue
        if isinstance(lst, torch.Tensor) or not isinstance(lst, Sequence) or len(lst) != L:
            raise TypeError(f"{name} must be a list of {L} tensors (one per weight matrix), "
                            f"got {type(lst).__name__}" + (f" of length {len(lst)}"
                                                           if isinstance(lst, Sequence) else ""))
        for i, t in enumerate(lst):
            if t is None and not is_bias and i == 0:
                continue  # B_1 is never used (no top-down term into the input)
            want = (weights[i].shape[0],) if is_bias else tuple(weights[i].shape)
            if not isinstance(t, torch.Tensor):
                raise TypeError(f"{name}[{i}] must be a torch.Tensor, got {type(t).__name__}")
            check_dense(f"{name}[{i}]", t)
            if tuple(t.shape) != want:
                raise ValueError(f"{name}[{i}] must have shape {want}, got {tuple(t.shape)}")
            if t.dtype not in dtypes:
                raise TypeError(f"{name}[{i}] has dtype {t.dtype}; expected the weights' {x.dtype}")
            check_same(("x", f"{name}[{i}]"), (x, t))
            if finite:
                check_finite(f"{name}[{i}]", t)
    return L


def _check_rows(name, t, x, width, what, dtypes, finite):
    check_tensor(name, t, ("batch", what), dtypes)
    check_same(("x", name), (x, t))
    if t.shape[0] != x.shape[0]:
        raise ValueError(f"{name} has batch {t.shape[0]} but x has batch {x.shape[0]}")
    if t.shape[1] != width:
        raise ValueError(f"{name} has width {t.shape[1]} but the layer has {width} units "
                         f"({name} shape {tuple(t.shape)})")
    if finite:
        check_finite(name, t)


def pc_relax(weights, x, target, steps=20, step_size=0.1, *, biases=None, activation="tanh",
             init="feedforward", output="clamp", beta=0.1, output_energy="mse", tol=None,
             feedback=None, fixed_predictions=False, precision="fp32", backend="auto",
             check_finite_input=True) -> PCRelaxResult:
    """Relax the value nodes of a predictive-coding network (math: module docstring).

    Args:
        weights: list of ``L`` tensors, ``weights[l-1] = W_l`` of shape ``(n_l, n_{l-1})``.
        x: input ``x_0`` (batch, n_0); float32 (float64 on reference / cpp).
        target: (batch, n_L) clamped / nudging target (one-hot or real-valued; for
            ``output_energy="ce"``, rows that sum to 1).
        steps: relaxation steps T (>= 1). step_size: gamma (> 0).
        biases: optional list of ``L`` tensors ``(n_l,)``.
        activation: ``"tanh"``, ``"relu"``, ``"leaky_relu"`` (slope 0.01) or ``"identity"``.
        init: ``"feedforward"``, ``"zeros"`` or a list of state tensors (copied).
        output: ``"clamp"``, ``"nudge_positive"``, ``"nudge_negative"``, ``"nudge_centred"``.
        beta: nudging strength (> 0; used by the nudge outputs only).
        output_energy: ``"mse"`` or ``"ce"`` (softmax cross-entropy).
        tol: optional relative energy-change tolerance for an early stop (>= 0). In float32 a
            ``tol`` below about 1e-5 is within the energy's rounding: the backends (the
            reference sums it in float32, C++ in float64) can then stop at different steps.
        feedback: optional list of ``L`` feedback matrices ``B_l`` (shape of ``W_l``; entry 0 unused,
            may be ``None``) used in the top-down term instead of ``W_{l+1}``.
        fixed_predictions: keep ``mu_l`` and ``f'`` at their feed-forward values.
        precision: ``"fp32"``, ``"tf32"`` (GEMM operands rounded to TF32) or ``"tf32x3"``
            (fp32-level accuracy on tensor cores; where the Triton backend takes its cuBLAS
            path, from 256 rows, fp32 GEMMs instead); the last two float32 only.
        backend: ``"auto"``, ``"reference"``, ``"triton"`` or ``"cpp"``.
        check_finite_input: check every input for NaN / inf first.

    Returns:
        :class:`PCRelaxResult` ``(states, errors, energy, steps_run)``.
    Raises:
        ValueError / TypeError naming a bad argument; DivergenceError (non-finite energy).
    """
    dtypes = FLOAT32_OR_64
    with one_finite_sync() if check_finite_input else nullcontext():  # one sync for the checks below
        L = check_network(weights, x, biases, feedback, dtypes, check_finite_input)
        which = resolve_backend(backend, x.device)
        if which == "triton":
            check_tensor("x", x, ("batch", "features"), FLOAT32_ONLY)
        _check_rows("target", target, x, weights[-1].shape[0], "outputs", dtypes, check_finite_input)
        check_int("steps", steps, 1)
        step_size = check_scalar("step_size", step_size, positive=True, allow_zero=False, dtype=x.dtype)
        activation = check_choice("activation", activation, ACTIVATIONS)
        output = check_choice("output", output, OUTPUTS)
        output_energy = check_choice("output_energy", output_energy, OUTPUT_ENERGIES)
        beta = check_scalar("beta", beta, positive=True, allow_zero=False, dtype=x.dtype)
        if tol is not None:
            tol = check_scalar("tol", tol, positive=True)
        fixed_predictions = check_flag("fixed_predictions", fixed_predictions)
        precision = check_precision(precision, x.dtype)
        if isinstance(init, str):
            check_choice("init", init, INITS)
        else:
            if isinstance(init, torch.Tensor) or not isinstance(init, Sequence) or len(init) not in (L, L - 1) \
                    or len(init) == 0:
                raise TypeError(f"init must be 'feedforward', 'zeros' or a list of {L} state tensors "
                                f"(or {L - 1} hidden ones), got {type(init).__name__}"
                                + (f" of length {len(init)}" if isinstance(init, Sequence) else ""))
            for i, s in enumerate(init):
                _check_rows(f"init[{i}]", s, x, weights[i].shape[0], "units", dtypes, check_finite_input)

    with torch.no_grad():
        if which == "reference":
            return pc_relax_reference(
                weights, x, target, steps, step_size, biases=biases, activation=activation, init=init,
                output=output, beta=beta, output_energy=output_energy, tol=tol, feedback=feedback,
                fixed_predictions=fixed_predictions, precision=precision)
        B, clamp = x.shape[0], output == "clamp"
        if isinstance(init, str) and init == "feedforward":
            s0 = None  # computed by the backend itself (C++: exact zero hidden errors to start)
        else:
            s0 = _initial_states(weights, biases, x, target, init, activation, clamp, precision)
        xx, tt, s0, beta_rows = _expand(x, target, s0, output, beta)
        args = (weights, biases, feedback, xx, tt, s0, steps, step_size, activation, clamp, beta_rows,
                output_energy == "ce", tol, fixed_predictions, precision)
        if which == "cpp":
            states, errors, energy, n = _relax_cpp(*args)
        else:
            from bpalts.kernels import pc_relax as tk

            states, errors, energy, n = tk.pc_relax(*args)
        _check_energy(energy)
        states, errors = _fold(states, errors, output, B)
        return PCRelaxResult(states, errors, energy, n)


def _relax_cpp(weights, biases, feedback, x, target, states, steps, step_size, activation, clamp,
               beta_rows, ce, tol, fixed_predictions, precision="fp32"):
    """C++ backend: the GEMMs in torch (MKL) into preallocated buffers, every elementwise pass of a
    step fused in C++ (two calls per step for all layers). Same loop and results as the reference.

    Units-major: every state, prediction, error and feedback buffer is kept transposed,
    (units, rows), so the products are ``mu_l^T = W_l f(x_{l-1})^T + b_l`` and
    ``g_l^T = W_{l+1}^T e_{l+1}^T``; MKL runs these 8-9% faster than the row-major
    ``f W^T`` / ``e W`` at 784-1000-500-250-10 B256 (two threads). The states come in and go out
    row-major (one transposed copy each way, ``C.pc_transpose``).

    ``states=None`` means the feed-forward initialisation, computed here with the same GEMMs and
    activation as the loop, so the hidden errors start at exactly 0. ``pc_errors`` reports which
    layers' errors are nonzero; a feedback GEMM whose input error is exactly 0 and a forward GEMM
    whose input layer did not move are skipped (exact: their results would be 0 / unchanged).
    After a feed-forward initialisation the error reaches layer l only at step L - l, so the
    first steps are cheap (with T = 3 on a 4-layer net, about half the GEMM work).
    ``precision="tf32"``: the weights are rounded once, each GEMM's other operand before it."""
    C = cpp_module()
    L = len(weights)
    a = ACTIVATIONS.index(activation)
    rnd = operand_rounder(precision)
    W = [rnd(w.detach()) for w in weights]
    back = [rnd(w.detach()) if w is not None else None for w in feedback] if feedback is not None else W
    bias_rows = [b.detach() for b in biases] if biases is not None else None
    bias = [b[:, None] for b in bias_rows] if biases is not None else None  # (units, 1)
    x, target = x.detach(), target.detach()
    R, widths = x.shape[0], [w.shape[0] for w in W]

    def buf(n):
        return torch.empty((n, R), dtype=x.dtype)

    def transposed(ts):  # C-contiguous copies of the transposes (C.pc_transpose: tiled, parallel)
        ts = [t.detach().contiguous() for t in ts]
        out = [torch.empty((t.shape[1], t.shape[0]), dtype=t.dtype) for t in ts]
        C.pc_transpose([t.numpy() for t in ts], [o.numpy() for o in out])
        return out

    def lin(i, inp_t, out):  # out = W_i inp^T + b_i, inp_t = inp^T (units-major)
        inp_t = rnd(inp_t)
        if bias is not None:
            torch.addmm(bias[i], W[i], inp_t, out=out)
        else:
            torch.mm(W[i], inp_t, out=out)

    MU, E = [buf(n) for n in widths], [buf(n) for n in widths]
    Fs, Gs = [buf(n) for n in widths[:-1]], [buf(n) for n in widths[:-1]]
    Ds = [buf(n) for n in widths[:-1]] if fixed_predictions else Fs  # f' frozen / formed on the fly
    nF, nD, nG = [f.numpy() for f in Fs], [d.numpy() for d in Ds], [g.numpy() for g in Gs]
    target_t = transposed([target])[0]
    if fixed_predictions:  # mu_l and f'(x_l) frozen at the feed-forward values
        mu_ff, _ = _feedforward(W, bias_rows, x, activation, precision)  # (W already rounded: idempotent)
        for m, v in zip(MU, mu_ff):
            m.copy_(v.T)
        if L > 1:
            C.pc_act([m.numpy() for m in MU[:-1]], None, nF, nD, a)
        if states is None:
            states_t = [m.clone() for m in MU[:-1]] + [target_t.clone() if clamp else MU[-1].clone()]
        else:
            states_t = transposed(states)
        S = states_t
    else:
        lin(0, x.T, MU[0])  # x_0 never changes: mu_1 once
        if states is None:
            S = []
            for i in range(L):
                if i > 0:
                    lin(i, Fs[i - 1], MU[i])
                S.append(target_t.clone() if (clamp and i == L - 1) else MU[i].clone())
                if i < L - 1:  # f only: pc_update forms f' from f (or x) as it goes
                    C.pc_act([S[i].numpy()], None, [nF[i]], None, a)
            stale = [False] * L
        else:
            S = transposed(states)
            if L > 1:
                C.pc_act([v.numpy() for v in S[:-1]], None, nF, None, a)
            stale = [False] + [True] * (L - 1)
    nS, nMU, nE = [v.numpy() for v in S], [m.numpy() for m in MU], [e.numpy() for e in E]
    nt = target_t.numpy()
    nudge = not clamp
    nb = beta_rows.reshape(1, -1).contiguous().numpy() if nudge else None

    def errors_energy():
        if not fixed_predictions:
            for i in range(1, L):
                if stale[i]:
                    lin(i, Fs[i - 1], MU[i])
                    stale[i] = False
        return C.pc_errors(nS, nMU, nE, nt, nb, nudge, ce)

    F_prev, nz = errors_energy()
    energy = []
    for _ in range(steps):
        use_g = [bool(nz[i + 1]) for i in range(L - 1)]
        for i in range(L - 1):
            if use_g[i]:
                torch.mm(back[i + 1].T, rnd(E[i + 1]), out=Gs[i])
        C.pc_update(nS, nE, nG, nF, nD, nt, nb, step_size, a, nudge, ce, not fixed_predictions, use_g, nz)
        if not fixed_predictions:
            for i in range(1, L):
                stale[i] = stale[i] or use_g[i - 1] or bool(nz[i - 1])  # x_{i} (0-based i-1) moved
        F, nz = errors_energy()
        energy.append(F)
        if tol is not None and abs(F - F_prev) <= tol * abs(F_prev):
            break
        F_prev = F
    return transposed(S), transposed(E), torch.tensor(energy, dtype=x.dtype), len(energy)
