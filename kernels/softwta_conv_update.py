r"""Triton kernels for :func:`bpalts.ops.softwta_conv_update` (math: see that module).

The two convolutions run in PyTorch (cuDNN on the GPU): ``U = conv2d(X, W)`` and, after the
gate, ``H = conv2d_weight(X, Y~)``. Around them:

1. ``_gate_kernel``, one program per (image, block of ``BLOCK_P`` output pixels), over the NCHW
   ``U`` as it comes from the convolution (channel stride ``H' W'``, pixels contiguous: loads
   are coalesced along pixels). Pass 1 runs over the channels in chunks of ``BLOCK_C`` with an
   online softmax: per pixel the running max, its first argmax and ``sum exp((U - max) / tau)``.
   Pass 2 re-reads the chunks, writes ``Y~ = sign * softmax`` over ``U`` in place and the
   program's per-channel partial sums of ``Y~ * U`` to a (programs, C_out) buffer.
2. ``_fold_kernel``: ``d_k = sum`` of the partials, in program order (deterministic, no
   atomics).
3. ``_prep_kernel``, one program per block of output channels over the (C_out, C_in kh kw) view:
   the old squared row norms and ``dW = H - d W``. With max-abs scaling it writes only the
   block's ``max|dW|``, and the dense op's ``_apply_kernel``
   (:mod:`bpalts.kernels.softwta_update`) folds the maxima, recomputes ``dW`` from ``H``, ``d``
   and the old ``W``, and applies ``W += rate * dW / max`` (dW is never written out). Without, the block applies ``W += rate * dW / (B H' W')`` itself
   (its rows are all its own) and that launch is skipped.

fp32 throughout.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
import triton
import triton.language as tl

from bpalts.kernels.softwta_update import BA_M, BA_N, BT, _apply_kernel

BLOCK_P = 64  # output pixels per gate program
BLOCK_C = 32  # channels per chunk in the gate
BLOCK_D = 64  # channels per fold program
BP_M, BP_F = 16, 128  # prep kernel: rows per program, features per step
NUM_WARPS = 4


@triton.jit
def _gate_kernel(U, PART, C, P, n_pblocks, inv_tau,
                 ANTI: tl.constexpr, BLOCK_C: tl.constexpr, BLOCK_P: tl.constexpr):
    """In place on U (B, C, P): Y~ = sign * softmax over C; PART[pid, c] = sum_p Y~ * U."""
    pid = tl.program_id(0)
    b = pid // n_pblocks
    rp = (pid % n_pblocks) * BLOCK_P + tl.arange(0, BLOCK_P)
    pmask = rp < P
    base = U + b.to(tl.int64) * C * P
    m = tl.full((BLOCK_P,), float("-inf"), dtype=tl.float32)
    s = tl.zeros((BLOCK_P,), dtype=tl.float32)
    win = tl.zeros((BLOCK_P,), dtype=tl.int32)
    # Pass 1: online max, first argmax and sum of exponentials per pixel.
    for c0 in range(0, C, BLOCK_C):
        rc = c0 + tl.arange(0, BLOCK_C)
        cmask = rc < C
        mask = cmask[:, None] & pmask[None, :]
        u = tl.load(base + rc[:, None] * P + rp[None, :], mask=mask, other=0.0)
        u = tl.where(cmask[:, None], u, float("-inf"))  # padded pixels stay finite (0)
        tm = tl.max(u, axis=0)
        ta = tl.argmax(u, axis=0).to(tl.int32) + c0
        win = tl.where(tm > m, ta, win)  # strictly greater: an earlier chunk keeps a tie
        nm = tl.maximum(m, tm)
        e = tl.where(cmask[:, None], tl.exp((u - nm[None, :]) * inv_tau), 0.0)
        s = s * tl.exp((m - nm) * inv_tau) + tl.sum(e, axis=0)
        m = nm
    inv_s = 1.0 / s
    # Pass 2: the gate, written over U, and the per-channel partial sums of Y~ * U.
    for c0 in range(0, C, BLOCK_C):
        rc = c0 + tl.arange(0, BLOCK_C)
        cmask = rc < C
        mask = cmask[:, None] & pmask[None, :]
        ptr = base + rc[:, None] * P + rp[None, :]
        u = tl.load(ptr, mask=mask, other=0.0)
        y = tl.exp((u - m[None, :]) * inv_tau) * inv_s[None, :]
        if ANTI:
            y = tl.where(rc[:, None] == win[None, :], y, -y)
        y = tl.where(mask, y, 0.0)
        tl.store(ptr, y, mask=mask)
        tl.store(PART + pid.to(tl.int64) * C + rc, tl.sum(y * u, axis=1), mask=cmask)


@triton.jit
def _fold_kernel(PART, D, C, n_prog, BLOCK: tl.constexpr):
    """D[c] = sum over programs of PART[:, c], in program order."""
    rc = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    cmask = rc < C
    acc = tl.zeros((BLOCK,), dtype=tl.float32)
    for p in range(0, n_prog):
        acc += tl.load(PART + p * C + rc, mask=cmask, other=0.0)
    tl.store(D + rc, acc, mask=cmask)


@triton.jit
def _prep_kernel(W, H, D, TMAX, NSQ, N, Fdim, coef,
                 MAXNORM: tl.constexpr, ADAPTIVE: tl.constexpr,
                 BLOCK_M: tl.constexpr, BLOCK_F: tl.constexpr):
    """Rows of W (N, F) and H: squared norms, dW = H - D W. MAXNORM: TMAX[pid] <- max|dW|,
    NSQ <- norms^2 (dW is not stored: ``_apply_kernel`` recomputes it from H, D and W); else
    W += rate * dW in place (rate = coef [* |norm - 1|^0.5])."""
    pid = tl.program_id(0)
    rm = pid * BLOCK_M + tl.arange(0, BLOCK_M)
    nmask = rm < N
    d = tl.load(D + rm, mask=nmask, other=0.0)
    nsq = tl.zeros((BLOCK_M,), dtype=tl.float32)
    mx = tl.zeros((BLOCK_M,), dtype=tl.float32)
    for f0 in range(0, Fdim, BLOCK_F):
        rf = f0 + tl.arange(0, BLOCK_F)
        mask = nmask[:, None] & (rf[None, :] < Fdim)
        off = rm[:, None] * Fdim + rf[None, :]
        w = tl.load(W + off, mask=mask, other=0.0)
        nsq += tl.sum(w * w, axis=1)
        if MAXNORM:
            dw = tl.load(H + off, mask=mask, other=0.0) - d[:, None] * w
            mx = tl.maximum(mx, tl.max(tl.where(mask, tl.abs(dw), 0.0), axis=1))
    if MAXNORM:
        tl.store(NSQ + rm, nsq, mask=nmask)
        tl.store(TMAX + pid, tl.max(mx, axis=0))
    else:
        if ADAPTIVE:
            rate = coef * tl.sqrt(tl.abs(tl.sqrt(nsq) - 1.0))
        else:
            rate = tl.zeros((BLOCK_M,), dtype=tl.float32) + coef
        for f0 in range(0, Fdim, BLOCK_F):
            rf = f0 + tl.arange(0, BLOCK_F)
            mask = nmask[:, None] & (rf[None, :] < Fdim)
            off = rm[:, None] * Fdim + rf[None, :]
            w = tl.load(W + off, mask=mask, other=0.0)
            h = tl.load(H + off, mask=mask, other=0.0)
            tl.store(W + off, w + rate[:, None] * (h - d[:, None] * w), mask=mask)


def softwta_conv_update(W: torch.Tensor, X: torch.Tensor, lr: float, temperature: float,
                        stride, padding, anti_hebbian: bool = True, adaptive_lr: bool = True,
                        max_normalize: bool = True) -> None:
    """In place on W (C_out, C_in, kh, kw), float32; inputs are validated by bpalts.ops."""
    Wc = W if W.is_contiguous() else W.contiguous()
    Wd, Xd = Wc.detach(), X.detach()
    N = Wd.shape[0]
    U = F.conv2d(Xd, Wd, stride=stride, padding=padding).contiguous()  # (B, C_out, H', W')
    B, _, Ho, Wo = U.shape
    P = Ho * Wo
    n_pblocks = triton.cdiv(P, BLOCK_P)
    n_prog = B * n_pblocks
    Fdim = Wd[0].numel()
    n_rows = triton.cdiv(N, BP_M)
    sizes = [n_prog * N, N, n_rows, N]
    PART, D, TMAX, NSQ = torch.empty(sum(sizes), device=W.device, dtype=torch.float32).split(sizes)
    _gate_kernel[(n_prog,)](U, PART, N, P, n_pblocks, 1.0 / temperature, ANTI=bool(anti_hebbian),
                            BLOCK_C=BLOCK_C, BLOCK_P=BLOCK_P, num_warps=NUM_WARPS)
    _fold_kernel[(triton.cdiv(N, BLOCK_D),)](PART, D, N, n_prog, BLOCK=BLOCK_D, num_warps=NUM_WARPS)
    H = torch.nn.grad.conv2d_weight(Xd, Wd.shape, U, stride=stride, padding=padding)
    H = H.reshape(N, Fdim).contiguous()
    W2 = Wd.view(N, Fdim)
    coef = lr if max_normalize else lr / (B * P)
    _prep_kernel[(n_rows,)](W2, H, D, TMAX, NSQ, N, Fdim, coef, MAXNORM=bool(max_normalize),
                            ADAPTIVE=bool(adaptive_lr), BLOCK_M=BP_M, BLOCK_F=BP_F,
                            num_warps=NUM_WARPS)
    if max_normalize:
        _apply_kernel[(triton.cdiv(N, BA_M), triton.cdiv(Fdim, BA_N))](
            W2, H, TMAX, NSQ, D, N, Fdim, n_rows, lr, W2.stride(0), W2.stride(1),
            ADAPTIVE=bool(adaptive_lr), DECAY=True, BLOCK_M=BA_M, BLOCK_N=BA_N, BLOCK_T=BT,
            num_warps=NUM_WARPS,
        )
    if Wc is not W:
        W.copy_(Wc)
