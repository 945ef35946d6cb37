r"""Triton kernels for :func:`bpalts.ops.ff_layer_step` (math: see that module).

Three launches per call (the first once for each of the positive and negative batches):

1. ``_forward_kernel``: the forward GEMM ``X W^T`` per (batch, units) tile on the raw input;
   the K loop also accumulates the squared row norms of the X tiles it loads (in float64:
   the squares of entries above 1.8e19 overflow float32), so the length normalisation costs
   no extra pass: epilogue ``z = s * acc + b`` with
   ``s = 1 / (sqrt(mean x^2) + eps)``, ``h = relu(z)`` stored, and the tile's partial goodness
   ``sum_n h^2`` per row written to a small (batch, unit tiles) buffer; the programs with
   ``pid_n == 0`` store ``s``.
2. ``_coef_kernel``: per row, sums the partial goodness into ``G``, then the loss
   term ``softplus(-t)`` with ``t = sign (G + c - theta)`` and ``2 dL/dG = -2 sign sigmoid(-t)/B``
   (both batches in one launch: rows ``< B+`` are positive, the rest negative).
3. ``_grad_kernel``: the gradient GEMM per (units, features) tile, K over the positive then the
   negative batch: ``grad_W = sum_b (2 dL/dG_b s_b h_b)^T x_b``; the scaled ``delta`` is formed on
   the fly from ``h`` (never stored), and the programs with ``pid_d == 0`` accumulate
   ``grad_b = sum_b 2 dL/dG_b h_b`` from the same tiles.

Deterministic (no atomics); fp32 with ``input_precision="ieee"``. Strides are passed for ``W``
and the inputs (non-contiguous inputs need no copy).
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

PRECISION = "ieee"
BM1, BN1, BK1 = 32, 64, 32  # forward GEMM: batch, units, features
BR = 64  # rows per program of _coef_kernel
BN3, BD3, BK3 = 64, 64, 32  # gradient GEMM: units, features, batch
NUM_WARPS = 4


@triton.jit
def _forward_kernel(
    X, W, BIAS, H, PG, S, B, N, F, NT, eps,
    s_xb, s_xf, s_wn, s_wf,
    NORMALIZE: tl.constexpr, PRECISION: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
):
    pid_m = tl.program_id(0)
    pid_n = tl.program_id(1)
    rm = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    rn = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    rk = tl.arange(0, BLOCK_K)
    mmask = rm < B
    nmask = rn < N
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    xsq = tl.zeros((BLOCK_M,), dtype=tl.float64)  # float64: squares of |x| > 1.8e19 overflow float32
    for k0 in range(0, F, BLOCK_K):
        kk = k0 + rk
        kmask = kk < F
        x = tl.load(X + rm[:, None] * s_xb + kk[None, :] * s_xf,
                    mask=mmask[:, None] & kmask[None, :], other=0.0)
        w = tl.load(W + kk[:, None] * s_wf + rn[None, :] * s_wn,
                    mask=kmask[:, None] & nmask[None, :], other=0.0)  # (K, N) tile of W^T
        acc += tl.dot(x, w, input_precision=PRECISION)
        if NORMALIZE:
            xd = x.to(tl.float64)
            xsq += tl.sum(xd * xd, axis=1)
    if NORMALIZE:
        s = (1.0 / (tl.sqrt(xsq / F) + eps)).to(tl.float32)
    else:
        s = tl.full((BLOCK_M,), 1.0, tl.float32)
    bias = tl.load(BIAS + rn, mask=nmask, other=0.0)
    h = tl.maximum(acc * s[:, None] + bias[None, :], 0.0)
    h = tl.where(nmask[None, :], h, 0.0)
    tl.store(H + rm[:, None] * N + rn[None, :], h, mask=mmask[:, None] & nmask[None, :])
    tl.store(PG + rm * NT + pid_n, tl.sum(h * h, axis=1), mask=mmask)
    tl.store(S + rm, s, mask=mmask & (pid_n == 0))


@triton.jit
def _coef_kernel(
    PG, S, OFF, G, C2, FS, LOSS, B_POS, B_ALL, NT, theta, inv_pos, inv_neg,
    BLOCK_R: tl.constexpr, BLOCK_T: tl.constexpr,
):
    pid = tl.program_id(0)
    r = pid * BLOCK_R + tl.arange(0, BLOCK_R)
    rmask = r < B_ALL
    # The tile is accumulated in the loop and reduced once after it: a reduction inside the loop
    # whose result has two uses (G and t below) trips an assertion in Triton 3.6's
    # OptimizeThreadLocality pass (seen on an H200 once NT > BLOCK_T, i.e. N > 1024).
    acc = tl.zeros((BLOCK_R, BLOCK_T), dtype=tl.float32)
    rt = tl.arange(0, BLOCK_T)
    for t0 in range(0, NT, BLOCK_T):
        tt = t0 + rt
        acc += tl.load(PG + r[:, None] * NT + tt[None, :], mask=rmask[:, None] & (tt < NT)[None, :],
                       other=0.0)
    g = tl.sum(acc, axis=1)
    off = tl.load(OFF + r, mask=rmask, other=0.0)
    is_pos = r < B_POS
    sign = tl.where(is_pos, 1.0, -1.0)
    inv_b = tl.where(is_pos, inv_pos, inv_neg)
    t = sign * (g + off - theta)
    u = -t
    # softplus(u) and sigmoid(u), stable for either sign of u.
    e = tl.exp(-tl.abs(u))
    sp = tl.maximum(u, 0.0) + tl.log(1.0 + e)
    sig = tl.where(u >= 0, 1.0 / (1.0 + e), e / (1.0 + e))
    c2 = -2.0 * sign * sig * inv_b
    s = tl.load(S + r, mask=rmask, other=0.0)
    tl.store(G + r, g, mask=rmask)
    tl.store(C2 + r, c2, mask=rmask)
    tl.store(FS + r, c2 * s, mask=rmask)
    tl.store(LOSS + r, sp * inv_b, mask=rmask)


@triton.jit
def _grad_accumulate(acc, gb, Hm, X, FS, C2, B, N, F, s_xb, s_xf, rn, rd, nmask, dmask,
                     WANT_B: tl.constexpr, PRECISION: tl.constexpr, BLOCK_K: tl.constexpr):
    rk = tl.arange(0, BLOCK_K)
    for k0 in range(0, B, BLOCK_K):
        kk = k0 + rk
        kmask = kk < B
        h = tl.load(Hm + kk[:, None] * N + rn[None, :], mask=kmask[:, None] & nmask[None, :], other=0.0)
        fs = tl.load(FS + kk, mask=kmask, other=0.0)
        x = tl.load(X + kk[:, None] * s_xb + rd[None, :] * s_xf,
                    mask=kmask[:, None] & dmask[None, :], other=0.0)
        acc += tl.dot(tl.trans(h * fs[:, None]), x, input_precision=PRECISION)
        if WANT_B:
            c2 = tl.load(C2 + kk, mask=kmask, other=0.0)
            gb += tl.sum(h * c2[:, None], axis=0)
    return acc, gb


@triton.jit
def _grad_kernel(
    HP, HN, XP, XN, FS, C2, GW, GB, BP, BN_, N, F,
    s_xpb, s_xpf, s_xnb, s_xnf,
    PRECISION: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_K: tl.constexpr,
):
    pid_n = tl.program_id(0)
    pid_d = tl.program_id(1)
    rn = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    rd = pid_d * BLOCK_D + tl.arange(0, BLOCK_D)
    nmask = rn < N
    dmask = rd < F
    acc = tl.zeros((BLOCK_N, BLOCK_D), dtype=tl.float32)
    gb = tl.zeros((BLOCK_N,), dtype=tl.float32)
    if pid_d == 0:
        acc, gb = _grad_accumulate(acc, gb, HP, XP, FS, C2, BP, N, F, s_xpb, s_xpf, rn, rd, nmask,
                                   dmask, True, PRECISION, BLOCK_K)
        acc, gb = _grad_accumulate(acc, gb, HN, XN, FS + BP, C2 + BP, BN_, N, F, s_xnb, s_xnf, rn,
                                   rd, nmask, dmask, True, PRECISION, BLOCK_K)
        tl.store(GB + rn, gb, mask=nmask)
    else:
        acc, gb = _grad_accumulate(acc, gb, HP, XP, FS, C2, BP, N, F, s_xpb, s_xpf, rn, rd, nmask,
                                   dmask, False, PRECISION, BLOCK_K)
        acc, gb = _grad_accumulate(acc, gb, HN, XN, FS + BP, C2 + BP, BN_, N, F, s_xnb, s_xnf, rn,
                                   rd, nmask, dmask, False, PRECISION, BLOCK_K)
    tl.store(GW + rn[:, None] * F + rd[None, :], acc, mask=nmask[:, None] & dmask[None, :])


def _forward(W, b, x, eps, normalize):
    B, F = x.shape
    N = W.shape[0]
    NT = triton.cdiv(N, BN1)
    H = torch.empty((B, N), device=x.device, dtype=torch.float32)
    PG = torch.empty((B, NT), device=x.device, dtype=torch.float32)
    S = torch.empty((B,), device=x.device, dtype=torch.float32)
    grid = (triton.cdiv(B, BM1), NT)
    _forward_kernel[grid](
        x, W, b, H, PG, S, B, N, F, NT, eps,
        x.stride(0), x.stride(1), W.stride(0), W.stride(1),
        NORMALIZE=normalize, PRECISION=PRECISION, BLOCK_M=BM1, BLOCK_N=BN1, BLOCK_K=BK1,
        num_warps=NUM_WARPS,
    )
    return H, PG, S


def ff_layer_step(W, b, x_pos, x_neg, theta, offset_pos, offset_neg, eps, normalize):
    """Returns ``(h_pos, h_neg, grad_W, grad_b, g_pos, g_neg, loss)``; float32 inputs."""
    dev = W.device
    N, F = W.shape
    bc = b.contiguous()
    Bp, Bn = x_pos.shape[0], x_neg.shape[0]
    Hp, PGp, Sp = _forward(W, bc, x_pos, eps, normalize)
    Hn, PGn, Sn = _forward(W, bc, x_neg, eps, normalize)
    PG = torch.cat([PGp, PGn])
    S = torch.cat([Sp, Sn])
    OFF = torch.cat([
        offset_pos.contiguous() if offset_pos is not None else torch.zeros(Bp, device=dev),
        offset_neg.contiguous() if offset_neg is not None else torch.zeros(Bn, device=dev),
    ])
    Ball = Bp + Bn
    G = torch.empty(Ball, device=dev, dtype=torch.float32)
    C2 = torch.empty_like(G)
    FS = torch.empty_like(G)
    LOSS = torch.empty_like(G)
    NT = PG.shape[1]
    _coef_kernel[(triton.cdiv(Ball, BR),)](
        PG, S, OFF, G, C2, FS, LOSS, Bp, Ball, NT, float(theta), 1.0 / Bp, 1.0 / Bn,
        BLOCK_R=BR, BLOCK_T=16, num_warps=NUM_WARPS,
    )
    GW = torch.empty((N, F), device=dev, dtype=torch.float32)
    GB = torch.empty((N,), device=dev, dtype=torch.float32)
    grid = (triton.cdiv(N, BN3), triton.cdiv(F, BD3))
    _grad_kernel[grid](
        Hp, Hn, x_pos, x_neg, FS, C2, GW, GB, Bp, Bn, N, F,
        x_pos.stride(0), x_pos.stride(1), x_neg.stride(0), x_neg.stride(1),
        PRECISION=PRECISION, BLOCK_N=BN3, BLOCK_D=BD3, BLOCK_K=BK3, num_warps=NUM_WARPS,
    )
    return Hp, Hn, GW, GB, G[:Bp], G[Bp:], LOSS.sum()
