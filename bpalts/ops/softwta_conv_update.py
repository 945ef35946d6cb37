r"""Convolutional SoftHebb: soft winner-take-all Hebbian update of a conv weight, in place.

For a batch of images ``X`` (B, C_in, H, W) and a conv weight ``W`` (C_out, C_in, kh, kw), with
``stride`` and ``padding`` (ints or pairs) as in :func:`torch.nn.functional.conv2d`:

.. math::

    U = \mathrm{conv2d}(X, W)\quad (B, C_{out}, H', W'),\qquad
    Y_{b,:,p} = \mathrm{softmax}(U_{b,:,p} / \tau)\ \text{over output channels, at every
    (image, pixel)},\\
    \tilde Y_{bkp} = \begin{cases} +Y_{bkp} & k = \arg\max_j U_{bjp} \\ -Y_{bkp} &
    \text{otherwise} \end{cases}\quad\text{(anti-Hebbian for every channel but the winner)},\\
    \Delta W = \mathrm{conv2d\_weight}(X, \tilde Y) - \mathrm{diag}\Bigl(\sum_{b,p}
    \tilde Y_{bkp} U_{bkp}\Bigr) W,\qquad \Delta W \leftarrow \Delta W / \max|\Delta W|,\\
    W_k \mathrel{+}= \eta_k\,\Delta W_k,\qquad \eta_k = \mathrm{lr}\,\bigl|\,\|w_k\|_2 - 1
    \bigr|^{1/2}\ \text{(norm over } C_{in} k_h k_w \text{ of the old weights)}.

``conv2d_weight(X, Y~)`` is the weight-gradient convolution
(:func:`torch.nn.grad.conv2d_weight`): for every output channel ``k`` the sum over images and
output pixels of ``Y~_{bkp}`` times the input patch that produced pixel ``p`` -- the dense
rule's ``Y~^T X`` with every (image, pixel) a sample. Without max-abs scaling the update is
divided by ``B H' W'`` (a mean over samples). This is the dense op
:func:`bpalts.ops.softwta_update` applied to the im2col patches, without ever forming them.
Journe, Garcia Rodriguez, Guo, Moraitis, "Hebbian deep learning without feedback", ICLR 2023.

Backends
--------
``reference``: the formula above in plain PyTorch (the specification; float32 and float64).

``cpp``: the two convolutions in PyTorch (oneDNN/MKL); the per-pixel channel softmax, the
winner's sign and ``d_k = sum Y~ U`` in one fused C++ pass over ``U`` laid out as a
(B H' W', C_out) matrix -- the dense op's ``softwta_gate`` (``csrc/softwta_update.cpp``), whose
rows are then the (image, pixel) samples: same math, same first-argmax tie rule, same
thread-count-independent reduction -- and the apply fused as in the dense op
(``softwta_apply`` on the (C_out, C_in kh kw) view of ``W``). ``Y~`` is copied back to NCHW
before the weight-gradient convolution (faster than feeding it channels-last). No C++ of its
own. float32 and float64.

``triton``: the two convolutions in PyTorch (cuDNN); the gate and the reduction ``d`` as one
Triton kernel over the NCHW ``U`` (``kernels/softwta_conv_update.py``), writing ``Y~`` in place
and per-block partial sums of ``d`` that a second small kernel folds deterministically, then the
dense op's Triton apply kernel on the (C_out, C_in kh kw) view. float32; CUDA tensors, or CPU
tensors under ``TRITON_INTERPRET=1``.
"""
from __future__ import annotations

import numbers

import torch
import torch.nn.functional as F

from bpalts._backend import cpp_module, resolve_backend
from bpalts._checks import (
    FLOAT32_ONLY,
    FLOAT32_OR_64,
    check_finite,
    check_in_place,
    check_same,
    check_scalar,
    check_tensor,
    one_finite_sync,
)
from bpalts.ops.softwta_update import check_softwta_settings, softmax_over

_W_DIMS = ("out_channels", "in_channels", "kernel_height", "kernel_width")
_X_DIMS = ("batch", "channels", "height", "width")


def _pair(name: str, value, minimum: int) -> tuple[int, int]:
    """An int or a pair of ints (Python or NumPy, not bools), each >= ``minimum``; returned as a
    pair of Python ints."""
    vals = value if isinstance(value, (tuple, list)) else (value, value)
    if len(vals) != 2 or any(isinstance(v, bool) or not isinstance(v, numbers.Integral) for v in vals):
        raise TypeError(f"{name} must be an int or a pair of ints, got {value!r}")
    if any(v < minimum for v in vals):
        raise ValueError(f"{name} must be >= {minimum}, got {value!r}")
    return int(vals[0]), int(vals[1])


def conv_output_size(H: int, Wd: int, kh: int, kw: int, stride, padding) -> tuple[int, int]:
    """(H', W') of conv2d without dilation."""
    return (H + 2 * padding[0] - kh) // stride[0] + 1, (Wd + 2 * padding[1] - kw) // stride[1] + 1


def check_conv_weights_and_batch(W, X, stride, padding, dtypes=FLOAT32_OR_64):
    """Shapes, dtypes, device and geometry of a conv layer update; returns (stride, padding)."""
    check_tensor("W", W, _W_DIMS, dtypes)
    check_tensor("X", X, _X_DIMS, dtypes)
    check_same(("W", "X"), (W, X))
    if X.shape[1] != W.shape[1]:
        raise ValueError(
            f"W has C_in={W.shape[1]} but X has {X.shape[1]} channels "
            f"(W is out x in x kh x kw = {tuple(W.shape)}, X is batch x channels x height x width "
            f"= {tuple(X.shape)})"
        )
    stride = _pair("stride", stride, 1)
    padding = _pair("padding", padding, 0)
    kh, kw = W.shape[2], W.shape[3]
    H, Wd = X.shape[2], X.shape[3]
    if H + 2 * padding[0] < kh or Wd + 2 * padding[1] < kw:
        raise ValueError(
            f"X's padded image ({H + 2 * padding[0]} x {Wd + 2 * padding[1]}: {H} x {Wd} with "
            f"padding {padding}) is smaller than W's kernel ({kh} x {kw})"
        )
    return stride, padding


def softwta_conv_update_reference(
    W: torch.Tensor,
    X: torch.Tensor,
    lr: float = 0.01,
    temperature: float = 1.0,
    stride=1,
    padding=0,
    anti_hebbian: bool = True,
    adaptive_lr: bool = True,
    max_normalize: bool = True,
) -> torch.Tensor:
    """The specification of :func:`softwta_conv_update` (plain PyTorch). In place; returns ``W``."""
    U = F.conv2d(X, W, stride=stride, padding=padding)  # (B, C_out, H', W')
    Y = softmax_over(U, temperature, dim=1)
    if anti_hebbian:
        winner = U.argmax(dim=1, keepdim=True)
        sign = torch.full_like(Y, -1.0).scatter_(1, winner, 1.0)
        Y = Y * sign
    yx = torch.nn.grad.conv2d_weight(X, W.shape, Y, stride=stride, padding=padding)
    yu = (Y * U).sum(dim=(0, 2, 3))
    dW = yx - yu[:, None, None, None] * W
    if max_normalize:
        dW = dW / (dW.abs().max() + 1e-30)
    else:
        dW = dW / (U.shape[0] * U.shape[2] * U.shape[3])
    if adaptive_lr:
        rate = lr * (W.flatten(1).norm(dim=1) - 1.0).abs().sqrt()
        W.add_(rate[:, None, None, None] * dW)
    else:
        W.add_(dW, alpha=lr)
    return W


def softwta_conv_update(
    W: torch.Tensor,
    X: torch.Tensor,
    lr: float = 0.01,
    temperature: float = 1.0,
    stride=1,
    padding=0,
    anti_hebbian: bool = True,
    adaptive_lr: bool = True,
    max_normalize: bool = True,
    backend: str = "auto",
    check_finite_input: bool = True,
) -> torch.Tensor:
    """One convolutional SoftHebb update, **in place** on ``W``; returns ``W``.

    Args:
        W: conv weight (C_out, C_in, kh, kw), float32 (float64 on reference / C++).
        X: images (B, C_in, H, W), same dtype and device.
        lr: base learning rate (finite).
        temperature: softmax temperature tau (> 0) over output channels.
        stride, padding: of the convolution, an int or a pair (stride >= 1, padding >= 0).
        anti_hebbian: flip the sign of every non-winning channel's update at each pixel.
        adaptive_lr: per-channel rate ``lr * |norm(w_k) - 1|^0.5``.
        max_normalize: scale the update by its max-abs entry (else by 1 / (B H' W')).
        backend: ``"auto"``, ``"reference"``, ``"triton"`` or ``"cpp"``.
        check_finite_input: reject NaN/inf in ``W`` and ``X`` (a full pass over both).
    """
    stride, padding = check_conv_weights_and_batch(W, X, stride, padding)
    check_in_place("W", W)
    lr = check_scalar("lr", lr, dtype=W.dtype)
    temperature, flags = check_softwta_settings(W, temperature, anti_hebbian, adaptive_lr, max_normalize)
    which = resolve_backend(backend, W.device)
    if which == "triton":
        check_tensor("W", W, _W_DIMS, FLOAT32_ONLY)
    if check_finite_input:
        with one_finite_sync():  # one host sync for every finiteness check below
            check_finite("X", X)
            check_finite("W", W)
    with torch.no_grad():
        if which == "reference":
            softwta_conv_update_reference(W, X, lr, temperature, stride, padding, **flags)
        elif which == "cpp":
            _softwta_conv_update_cpp(W, X, lr, temperature, stride, padding, **flags)
        else:
            _softwta_conv_update_triton(W, X, lr, temperature, stride, padding, **flags)
    return W


def _softwta_conv_update_cpp(W, X, lr, temperature, stride, padding, anti_hebbian, adaptive_lr,
                             max_normalize) -> None:
    """C++ backend: the convolutions in torch, the gate and the apply fused in C++."""
    C = cpp_module()
    Wc = W if W.is_contiguous() else W.contiguous()
    Wd, Xd = Wc.detach(), X.detach()
    C_out = Wd.shape[0]
    U = F.conv2d(Xd, Wd, stride=stride, padding=padding)  # (B, C_out, H', W')
    B, _, Ho, Wo = U.shape
    # (B H' W', C_out): every (image, pixel) a row, the softmax runs along the row.
    Ut = U.permute(0, 2, 3, 1).contiguous()
    d = Ut.new_empty((1, C_out))
    C.softwta_gate(Ut.view(-1, C_out).numpy(), d.numpy(), 1.0 / temperature, anti_hebbian)
    # Y~ back to NCHW: the weight-gradient convolution is ~25% slower on channels-last input
    # (oneDNN, 1 thread, 64x96x14x14 -> 384x3x3), far more than this copy.
    Y = Ut.permute(0, 3, 1, 2).contiguous()
    H = torch.nn.grad.conv2d_weight(Xd, Wd.shape, Y, stride=stride, padding=padding)
    H = H.reshape(C_out, -1).contiguous()
    C.softwta_apply(Wd.view(C_out, -1).numpy(), H.numpy(), d.numpy(), lr, adaptive_lr,
                    max_normalize, 1.0 / (B * Ho * Wo))
    if Wc is not W:
        W.copy_(Wc)


def _softwta_conv_update_triton(W, X, lr, temperature, stride, padding, anti_hebbian, adaptive_lr,
                                max_normalize) -> None:
    from bpalts.kernels import softwta_conv_update as tk

    tk.softwta_conv_update(W, X, lr, temperature, stride, padding, anti_hebbian=anti_hebbian,
                           adaptive_lr=adaptive_lr, max_normalize=max_normalize)
