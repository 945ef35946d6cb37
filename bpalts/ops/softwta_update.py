r"""SoftHebb: soft winner-take-all Hebbian update, in place on ``W``.

For a batch ``X`` (B x D) and weights ``W`` (N units x D):

.. math::

    U = X W^\top,\qquad Y = \mathrm{softmax}(U / \tau)\ \text{over units},\\
    \tilde Y_{bk} = \begin{cases} +Y_{bk} & k = \arg\max_j U_{bj} \\ -Y_{bk} & \text{otherwise}
    \end{cases}\quad\text{(anti-Hebbian for every unit but the winner)},\\
    \Delta W = \tilde Y^\top X - \mathrm{diag}\Bigl(\sum_b \tilde Y_{bk} U_{bk}\Bigr) W,\qquad
    \Delta W \leftarrow \Delta W / \max|\Delta W| \ \text{(scaled by its max-abs entry)},\\
    W_k \mathrel{+}= \eta_k\,\Delta W_k,\qquad \eta_k = \mathrm{lr}\,\bigl|\,\|w_k\|_2 - 1\bigr|^{1/2}
    \ \text{(per-unit adaptive rate, from the weights before the update)}.

Without max-abs scaling the update is divided by B instead (a batch mean), as in
:func:`bpalts.ops.hebbian_update`. Moraitis, Toichkin, Journe, Chua, Guo, "SoftHebb: Bayesian
inference in unsupervised Hebbian soft winner-take-all networks", Neuromorphic Computing and
Engineering 2022; Journe, Garcia Rodriguez, Guo, Moraitis, "Hebbian deep learning without
feedback", ICLR 2023 (anti-Hebbian sign, adaptive rate, max-abs scaling).

Backends
--------
``reference``: the formula above, in plain PyTorch (the specification; float32 and float64).

``cpp``: the two GEMMs ``U = X W^T`` and ``H = Y~^T X`` in PyTorch (MKL); the rest fused in C++
(``csrc/softwta_update.cpp``): one pass over ``U`` for the row softmax, the winner's sign and
the column sums ``d = sum_b Y~ * U`` (``Y~`` overwrites ``U``), then the apply, which never
materialises ``dW = H - d W``: one pass for the old row norms and ``max|dW|``, one for
``W += rate * dW / max``. float32 and float64; deterministic for any thread count.

``triton``: three kernels (``kernels/softwta_update.py``): the forward GEMM with the softmax's
per-tile row statistics (and the old row norms) in its epilogue, the update GEMM ``Y~^T X`` with
the gate computed on the fly and ``- d W`` plus the tile's ``max|dW|`` in its epilogue, and the
apply. float32; CUDA tensors, or CPU tensors under ``TRITON_INTERPRET=1``. Updates of at least
``B * N * F`` multiply-adds, 256 * 1024 * 784 at fp32 (``CUBLAS_MIN_MACS``) or 1024 * 4096 * 4096
at tf32 (``CUBLAS_MIN_MACS_TF32``; both in ``kernels/softwta_update.py``; tf32x3 from
``CUBLAS_MIN_MACS_TF32X3``, 0: never, as its cuBLAS form was not float32-level on an H200), take a cuBLAS path instead (both GEMMs in cuBLAS, the gate
and the apply in three Triton passes): on an H100 3.9x (fp32) and 2.5-2.9x (tf32) faster at
B1024 4096->4096.
"""
from __future__ import annotations

import torch

from bpalts._backend import cpp_module, resolve_backend
from bpalts._precision import TRITON_INPUT_PRECISION, check_precision, mm
from bpalts._checks import (
    check_weights_and_batch,
    FLOAT32_ONLY,
    check_finite,
    check_flag,
    check_in_place,
    check_scalar,
    check_tensor,
    one_finite_sync,
)
from bpalts.ops.hebbian_update import unaliased_input


def softmax_over(U: torch.Tensor, temperature: float, dim: int) -> torch.Tensor:
    """``softmax(U / temperature)`` along ``dim``, with each slice's maximum subtracted before
    the division: ``U / temperature`` itself overflows to inf (and the softmax to NaN) for the
    small temperatures the ops accept (down to ``1 / finfo.max``), ``U - max`` scaled only
    underflows towards -inf, whose exponential is 0. The same values otherwise. From
    ``temperature >= 1`` (the learners' and benchmarks' setting) ``U / temperature`` cannot
    overflow for a finite ``U``, and the plain form runs (one pass fewer)."""
    if temperature >= 1.0:
        return torch.softmax(U / temperature, dim=dim)
    return torch.softmax((U - U.amax(dim=dim, keepdim=True)) / temperature, dim=dim)


def softwta_update_reference(
    W: torch.Tensor,
    X: torch.Tensor,
    lr: float = 0.01,
    temperature: float = 1.0,
    anti_hebbian: bool = True,
    adaptive_lr: bool = True,
    max_normalize: bool = True,
    precision: str = "fp32",
) -> torch.Tensor:
    """The specification of :func:`softwta_update` (plain PyTorch). In place; returns ``W``.

    ``precision="tf32"`` rounds both GEMMs' operands to TF32 (see :mod:`bpalts._precision`)."""
    U = mm(X, W.T, precision)
    Y = softmax_over(U, temperature, dim=1)
    if anti_hebbian:
        winner = U.argmax(dim=1, keepdim=True)
        sign = torch.full_like(Y, -1.0).scatter_(1, winner, 1.0)
        Y = Y * sign
    dW = mm(Y.T, X, precision) - (Y * U).sum(0)[:, None] * W
    if max_normalize:
        dW = dW / (dW.abs().max() + 1e-30)
    else:
        dW = dW / X.shape[0]
    if adaptive_lr:
        rate = lr * (W.norm(dim=1) - 1.0).abs().sqrt()
        W.add_(rate[:, None] * dW)
    else:
        W.add_(dW, alpha=lr)
    return W


def check_softwta_settings(W: torch.Tensor, temperature, anti_hebbian, adaptive_lr,
                           max_normalize) -> tuple[float, dict]:
    """The settings the dense and convolutional SoftHebb ops share, checked: ``temperature`` > 0
    with an inverse that is finite in ``W``'s dtype, and the three flags bools. Returns
    ``(temperature, flags)``, ``flags`` the keyword arguments ``anti_hebbian``, ``adaptive_lr``,
    ``max_normalize``."""
    temperature = check_scalar("temperature", temperature, positive=True, allow_zero=False)
    if 1.0 / temperature > torch.finfo(W.dtype).max:
        raise ValueError(f"temperature must be at least {1 / torch.finfo(W.dtype).max:.3g} (its inverse "
                         f"must be finite in {str(W.dtype).replace('torch.', '')}), got {temperature}")
    return temperature, dict(anti_hebbian=check_flag("anti_hebbian", anti_hebbian),
                             adaptive_lr=check_flag("adaptive_lr", adaptive_lr),
                             max_normalize=check_flag("max_normalize", max_normalize))


def softwta_update(
    W: torch.Tensor,
    X: torch.Tensor,
    lr: float = 0.01,
    temperature: float = 1.0,
    anti_hebbian: bool = True,
    adaptive_lr: bool = True,
    max_normalize: bool = True,
    backend: str = "auto",
    check_finite_input: bool = True,
    precision: str = "fp32",
) -> torch.Tensor:
    """One SoftHebb update, **in place** on ``W`` (units x features); returns ``W``.

    Args:
        W: weights (units, features), float32 (float64 on reference / C++).
        X: batch (batch, features), same dtype and device (it may share memory with ``W``:
            it is then copied first, so the update reads ``W`` as it was).
        lr: base learning rate (finite).
        temperature: softmax temperature tau (> 0); smaller is closer to hard winner-take-all.
        anti_hebbian: flip the sign of every non-winning unit's update.
        adaptive_lr: per-unit rate ``lr * |norm(w_k) - 1|^0.5``.
        max_normalize: scale the update by its max-abs entry (else by 1/batch).
        backend: ``"auto"``, ``"reference"``, ``"triton"`` or ``"cpp"``.
        check_finite_input: reject NaN/inf in ``W`` and ``X`` before running.
        precision: ``"fp32"``, ``"tf32"`` or ``"tf32x3"`` for the two GEMMs (the last two on
            tensor cores on the Triton backend; ``"tf32"`` emulated by operand rounding on the
            reference and C++ backends, ``"tf32x3"`` fp32 there; see :mod:`bpalts._precision`).
    """
    check_weights_and_batch(W, X)
    check_in_place("W", W)
    precision = check_precision(precision, W.dtype)
    lr = check_scalar("lr", lr, dtype=W.dtype)
    temperature, flags = check_softwta_settings(W, temperature, anti_hebbian, adaptive_lr, max_normalize)
    which = resolve_backend(backend, W.device)
    if which == "triton":
        check_tensor("W", W, ("units", "features"), FLOAT32_ONLY)
    if check_finite_input:
        with one_finite_sync():  # one host sync for every finiteness check below
            check_finite("X", X)
            check_finite("W", W)
    flags["precision"] = precision
    X = unaliased_input(X, W)  # X may be W itself or a view of it: read it as it was
    with torch.no_grad():
        if which == "reference":
            softwta_update_reference(W, X, lr, temperature, **flags)
        elif which == "cpp":
            _softwta_update_cpp(W, X, lr, temperature, **flags)
        else:
            _softwta_update_triton(W, X, lr, temperature, **flags)
    return W


def _softwta_update_cpp(W, X, lr, temperature, anti_hebbian, adaptive_lr, max_normalize,
                        precision="fp32") -> None:
    """C++ backend: the two GEMMs in torch (MKL), the gate and the apply fused in C++.

    Units-major: ``U^T = W X^T`` (units, batch), the gate down its columns in place
    (``U^T <- Y~^T``), then ``H = Y~^T X``, both plain products for MKL (faster at B256
    784->1024 than ``X W^T`` and ``U^T X``: the whole C++ path 2.5-3.4%; see
    ``csrc/softwta_update.cpp``)."""
    C = cpp_module()
    Wc = W if W.is_contiguous() else W.contiguous()
    Xc = X.contiguous()
    # .detach(): numpy() refuses tensors that require grad; the storage is shared either way.
    Wd, Xd = Wc.detach(), Xc.detach()
    B, N = Xd.shape[0], Wd.shape[0]
    Ut = mm(Wd, Xd.T, precision).contiguous()  # U^T, (N, B)
    d = Ut.new_empty((1, N))
    C.softwta_gate_columns(Ut.numpy(), d.numpy(), 1.0 / temperature, anti_hebbian)  # Ut <- Y~^T
    H = mm(Ut, Xd, precision).contiguous()  # Y~^T X, (N, D)
    C.softwta_apply(Wd.numpy(), H.numpy(), d.numpy(), lr, adaptive_lr, max_normalize, 1.0 / B)
    if Wc is not W:
        W.copy_(Wc)


def _softwta_update_triton(W, X, lr, temperature, anti_hebbian, adaptive_lr, max_normalize,
                           precision="fp32") -> None:
    from bpalts.kernels import softwta_update as tk

    tk.softwta_update(W, X, lr, temperature, anti_hebbian=anti_hebbian, adaptive_lr=adaptive_lr,
                      max_normalize=max_normalize, precision=TRITON_INPUT_PRECISION[precision])
