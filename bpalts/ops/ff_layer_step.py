r"""One forward-forward layer step: forward pass of positive and negative data, the layer's
loss and its closed-form gradient (no autograd).

For a layer with weights ``W`` (N units x D inputs), bias ``b`` (N), a positive batch ``X+``
(B+ x D) and a negative batch ``X-`` (B- x D):

.. math::

    \hat x = x / (\sqrt{\mathrm{mean}_j x_j^2} + \epsilon)
    \quad\text{(length normalisation of the layer input; skipped with normalize=False)},\\
    z = \hat x W^\top + b,\qquad h = \mathrm{relu}(z),\qquad G = \sum_n h_n^2\ \text{(goodness)},\\
    s^\pm = G^\pm + c^\pm - \theta\quad(c: \text{optional per-sample offset, e.g. the detached
    goodness of other layers in collaborative FF}),\\
    L = \mathrm{mean}_{b}\ \mathrm{softplus}(-s^+_b) + \mathrm{mean}_{b}\ \mathrm{softplus}(s^-_b),\\
    \partial L/\partial G^+_b = -\sigma(-s^+_b)/B^+,\quad \partial L/\partial G^-_b = \sigma(s^-_b)/B^-,\\
    \delta_{bn} = 2\,(\partial L/\partial G_b)\,h_{bn}\quad(\partial G/\partial z = 2h\ \text{for ReLU}),\\
    \nabla_W L = \delta^{+\top} \hat X^+ + \delta^{-\top} \hat X^-,\qquad
    \nabla_b L = \textstyle\sum_b \delta^+_b + \sum_b \delta^-_b.

Hinton, "The Forward-Forward Algorithm: Some Preliminary Investigations", arXiv 2212.13345
(2022); the offsets ``c`` implement Lorberbom, Gat, Adi, Schwing, Hazan, "Layer collaboration in
the forward-forward algorithm", AAAI 2024. The optimiser is not part of the op: it returns the
gradients and the learner applies them (Adam in :class:`bpalts.learners.ForwardForward`).

Returns an :class:`FFStep` ``(h_pos, h_neg, grad_W, grad_b, g_pos, g_neg, loss)``: the
activities ``h`` (B x N, not normalised: the next layer normalises them), the gradients, the
per-sample goodness ``G`` of this layer (without the offset) and the loss (0-d tensor). All
fresh tensors; ``W``, ``b`` and the inputs are not modified.

Backends
--------
``reference``: the formulas above in plain PyTorch (the specification; float32 and float64).

``cpp``: the GEMMs ``X W^T`` and ``delta^T X`` in PyTorch (MKL) on the *raw* inputs (the row
scale ``1 / (rms + eps)`` is folded into the epilogue and into ``delta``, so ``X^`` is never
materialised); the row scales (one pass over X) and the whole epilogue in C++
(``csrc/ff_layer_step.cpp``): per row ``z = s * (XW^T) + b``, ``h = relu(z)`` written in place,
``G``, the loss and ``dL/dG`` (stable softplus / sigmoid), and ``delta * s`` for the weight
gradient. ``grad_b = h^T (2 dL/dG)`` is a GEMV. float32 and float64; deterministic.

``triton``: three kernels (``kernels/ff_layer_step.py``): the forward GEMM with the row scales
(accumulated from the X tiles its K loop loads), bias, ReLU and the tile's partial goodness in
its epilogue; a fold of the partial goodness into ``G``, the loss terms and ``dL/dG``; and the
gradient GEMM ``delta^T X^`` with ``delta`` formed on the fly from ``h`` (never stored) and
``grad_b`` accumulated by the same programs. float32; CUDA, or CPU under ``TRITON_INTERPRET=1``.

Given activities (``h_pos``, ``h_neg``: collaborative FF has computed them already): no forward
GEMM; the loss and the gradient GEMMs above in PyTorch, the same on every backend.
"""
from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F

from bpalts._backend import cpp_module, resolve_backend
from bpalts._checks import (FLOAT32_ONLY, check_finite, check_flag, check_same, check_scalar, check_tensor,
                            one_finite_sync)


class FFStep(NamedTuple):
    """What :func:`ff_layer_step` returns."""

    h_pos: torch.Tensor  # (B+, N) relu activities of the positive batch
    h_neg: torch.Tensor  # (B-, N)
    grad_W: torch.Tensor  # (N, D)
    grad_b: torch.Tensor  # (N,)
    g_pos: torch.Tensor  # (B+,) goodness sum_n h^2, without offset
    g_neg: torch.Tensor  # (B-,)
    loss: torch.Tensor  # 0-d


def rms_normalize(x: torch.Tensor, eps: float) -> torch.Tensor:
    """Each row divided by its root mean square plus ``eps`` (FF's length normalisation of a
    layer's input; the learner uses it for the passes the op does not make). The mean square
    of a float32 ``x`` is accumulated in float64, as the C++ and Triton backends do, so that
    rows of large entries (``|x| > 1.8e19``, whose squares overflow float32) are normalised,
    not divided by infinity."""
    norm = torch.linalg.vector_norm(x, dim=1, keepdim=True, dtype=torch.float64)  # no float64 copy of x
    return x / (norm * x.shape[1] ** -0.5 + eps).to(x.dtype)


def _layer_input(x: torch.Tensor, eps: float, normalize: bool) -> torch.Tensor:
    return rms_normalize(x, eps) if normalize else x


def ff_layer_step_reference(
    W: torch.Tensor,
    b: torch.Tensor,
    x_pos: torch.Tensor,
    x_neg: torch.Tensor,
    theta: float,
    offset_pos: torch.Tensor | None = None,
    offset_neg: torch.Tensor | None = None,
    eps: float = 1e-8,
    normalize: bool = True,
) -> FFStep:
    """The specification of :func:`ff_layer_step` (plain PyTorch, no autograd)."""
    xp, xn = _layer_input(x_pos, eps, normalize), _layer_input(x_neg, eps, normalize)
    hp = torch.relu(xp @ W.T + b)
    hn = torch.relu(xn @ W.T + b)
    return _step_from_activities(xp, xn, hp, hn, theta, offset_pos, offset_neg)


def _step_from_activities(xp, xn, hp, hn, theta, offset_pos, offset_neg) -> FFStep:
    """Loss and gradients from the (normalised) inputs and the ReLU activities."""
    gp = (hp * hp).sum(1)
    gn = (hn * hn).sum(1)
    sp = gp - theta if offset_pos is None else gp + offset_pos - theta
    sn = gn - theta if offset_neg is None else gn + offset_neg - theta
    loss = F.softplus(-sp).mean() + F.softplus(sn).mean()
    cp = -torch.sigmoid(-sp) / xp.shape[0]  # dL/dG+
    cn = torch.sigmoid(sn) / xn.shape[0]  # dL/dG-
    dp = 2.0 * cp[:, None] * hp
    dn = 2.0 * cn[:, None] * hn
    grad_W = dp.T @ xp + dn.T @ xn
    grad_b = dp.sum(0) + dn.sum(0)
    return FFStep(hp, hn, grad_W, grad_b, gp, gn, loss)


def _check_offset(name: str, off, x: torch.Tensor, xname: str):
    if off is None:
        return None
    check_tensor(name, off, ("batch",), (x.dtype,))
    check_same((xname, name), (x, off))
    if off.shape[0] != x.shape[0]:
        raise ValueError(f"{name} must be ({x.shape[0]},) (one offset per row of {xname}), "
                         f"got shape {tuple(off.shape)}")
    return off


def ff_layer_step(
    W: torch.Tensor,
    b: torch.Tensor,
    x_pos: torch.Tensor,
    x_neg: torch.Tensor,
    theta: float,
    offset_pos: torch.Tensor | None = None,
    offset_neg: torch.Tensor | None = None,
    eps: float = 1e-8,
    normalize: bool = True,
    backend: str = "auto",
    check_finite_input: bool = True,
    h_pos: torch.Tensor | None = None,
    h_neg: torch.Tensor | None = None,
) -> FFStep:
    """One forward-forward layer step (forward, loss, closed-form gradient); see the module doc.

    Args:
        W: weights (units, features), float32 (float64 on reference / C++).
        b: bias (units,), same dtype and device.
        x_pos: positive batch (batch, features); x_neg: negative batch (batch, features) (the two
            batch sizes may differ).
        theta: goodness threshold (finite).
        offset_pos, offset_neg: optional (batch,) offsets added to the goodness in the loss
            (collaborative FF: the detached goodness of the other layers, minus their thresholds).
        eps: added to the input rows' RMS before dividing (> 0).
        normalize: length-normalise the inputs (RMS 1) before the layer.
        backend: ``"auto"``, ``"reference"``, ``"triton"`` or ``"cpp"``.
        check_finite_input: reject NaN/inf in the inputs (one pass over each).
        h_pos, h_neg: the layer's ReLU activities ``relu(x^ W^T + b)`` for ``x_pos`` / ``x_neg``
            when the caller has already computed them (collaborative FF needs every layer's
            goodness before any layer's step). Both or neither. The forward GEMMs are then
            skipped; the loss and the gradient GEMMs run in PyTorch on every backend (there is no
            forward GEMM left to fuse them into). They are trusted to come from this ``W``, ``b``
            and inputs (the op does not recompute them to check); returned as ``h_pos, h_neg``.

    Returns:
        :class:`FFStep` ``(h_pos, h_neg, grad_W, grad_b, g_pos, g_neg, loss)``.
    """
    check_tensor("W", W, ("units", "features"))
    check_tensor("b", b, ("units",))
    check_tensor("x_pos", x_pos, ("batch", "features"))
    check_tensor("x_neg", x_neg, ("batch", "features"))
    check_same(("W", "b", "x_pos", "x_neg"), (W, b, x_pos, x_neg))
    if b.shape[0] != W.shape[0]:
        raise ValueError(f"b has {b.shape[0]} units but W has {W.shape[0]} (W is units x features "
                         f"= {tuple(W.shape)})")
    for name, x in (("x_pos", x_pos), ("x_neg", x_neg)):
        if x.shape[1] != W.shape[1]:
            raise ValueError(f"{name} has {x.shape[1]} features but W expects {W.shape[1]} "
                             f"(W is units x features = {tuple(W.shape)}, {name} is batch x "
                             f"features = {tuple(x.shape)})")
    offset_pos = _check_offset("offset_pos", offset_pos, x_pos, "x_pos")
    offset_neg = _check_offset("offset_neg", offset_neg, x_neg, "x_neg")
    theta = check_scalar("theta", theta)
    eps = check_scalar("eps", eps, positive=True, allow_zero=False)
    if eps < torch.finfo(W.dtype).tiny:
        raise ValueError(f"eps must be at least {torch.finfo(W.dtype).tiny:.3g} (the smallest normal "
                         f"{str(W.dtype).replace('torch.', '')}; a smaller one rounds to 0), got {eps}")
    normalize = check_flag("normalize", normalize)
    if (h_pos is None) != (h_neg is None):
        raise ValueError("h_pos and h_neg must be given together (or neither)")
    for name, h, x, xname in (("h_pos", h_pos, x_pos, "x_pos"), ("h_neg", h_neg, x_neg, "x_neg")):
        if h is None:
            continue
        check_tensor(name, h, ("batch", "units"), (W.dtype,))
        check_same(("W", name), (W, h))
        if tuple(h.shape) != (x.shape[0], W.shape[0]):
            raise ValueError(f"{name} must be ({x.shape[0]}, {W.shape[0]}) ({xname}'s batch x W's "
                             f"units), got shape {tuple(h.shape)}")
    which = resolve_backend(backend, W.device)
    if which == "triton":
        check_tensor("W", W, ("units", "features"), FLOAT32_ONLY)
    if check_finite_input:
        with one_finite_sync():  # one host sync for every finiteness check below
            for name, t in (("W", W), ("b", b), ("x_pos", x_pos), ("x_neg", x_neg),
                            ("offset_pos", offset_pos), ("offset_neg", offset_neg),
                            ("h_pos", h_pos), ("h_neg", h_neg)):
                if t is not None:
                    check_finite(name, t)
    W, b, x_pos, x_neg = W.detach(), b.detach(), x_pos.detach(), x_neg.detach()
    offset_pos = None if offset_pos is None else offset_pos.detach()
    offset_neg = None if offset_neg is None else offset_neg.detach()
    args = (W, b, x_pos, x_neg, theta, offset_pos, offset_neg, eps, normalize)
    with torch.no_grad():
        if h_pos is not None:
            xp, xn = _layer_input(x_pos, eps, normalize), _layer_input(x_neg, eps, normalize)
            return _step_from_activities(xp, xn, h_pos.detach(), h_neg.detach(), theta,
                                         offset_pos, offset_neg)
        if which == "reference":
            return ff_layer_step_reference(*args)
        if which == "cpp":
            return _ff_layer_step_cpp(*args)
        from bpalts.kernels import ff_layer_step as tk

        return FFStep(*tk.ff_layer_step(*args))


def _ff_half_cpp(C, W, b, x, theta, offset, eps, normalize, sign):
    """Forward + epilogue of one of the two batches. Returns (h, D, g, coef2, loss_sum) with
    D = 2 dL/dG * s * h (the weight-gradient rows) and coef2 = 2 dL/dG."""
    xc = x.contiguous()
    B = xc.shape[0]
    s = xc.new_empty((B, 1))
    if normalize:
        C.ff_row_scale(xc.numpy(), s.numpy(), eps)
    else:
        s.fill_(1.0)
    Z = torch.mm(xc, W.T)  # (B, N), raw input: the scale s is applied in the epilogue
    D = torch.empty_like(Z)
    g = xc.new_empty((B, 1))
    c2 = xc.new_empty((B, 1))
    off = offset.contiguous().view(B, 1) if offset is not None else xc.new_zeros((B, 1))
    loss = C.ff_epilogue(Z.numpy(), D.numpy(), s.numpy(), b.contiguous().view(1, -1).numpy(),
                         off.numpy(), g.numpy(), c2.numpy(), theta, sign, 1.0 / B)
    return xc, Z, D, g.view(B), c2.view(B), loss


def _ff_layer_step_cpp(W, b, x_pos, x_neg, theta, offset_pos, offset_neg, eps, normalize) -> FFStep:
    C = cpp_module()
    Wc = W.contiguous()
    xp, hp, dp, gp, cp, lp = _ff_half_cpp(C, Wc, b, x_pos, theta, offset_pos, eps, normalize, 1.0)
    xn, hn, dn, gn, cn, ln = _ff_half_cpp(C, Wc, b, x_neg, theta, offset_neg, eps, normalize, -1.0)
    grad_W = torch.mm(dp.T, xp)
    grad_W.addmm_(dn.T, xn)
    grad_b = torch.mv(hp.T, cp)
    grad_b.addmv_(hn.T, cn)
    loss = torch.tensor(lp + ln, dtype=W.dtype)
    return FFStep(hp, hn, grad_W, grad_b, gp, gn, loss)
