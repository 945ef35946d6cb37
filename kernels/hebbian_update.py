r"""Triton kernels for :func:`bpalts.ops.hebbian_update` (math and rules: see that module).

Dense rules, ``W += lr/B (G^T X - D W)`` with ``G = s(g(X W^T))`` and ``D`` = ``tril(G^T G)``,
``G^T G`` or nothing, in up to four launches:

1. ``_matmul_kernel`` (gate epilogue): ``G = g(X W^T)``; for BCM the epilogue also writes
   ``G = Y (Y - theta)`` and each batch tile's partial ``sum_b Y^2`` per unit.
2. ``_matmul_kernel`` (lower-triangle mode): ``D = G^T G``; for the hierarchical rules only the
   tiles on or below the diagonal run their K loop, the rest store zeros. Skipped without decay.
   For the subspace rules (full ``D``: oja, nlpca_sym) instead the residual mode:
   ``R = X - G W`` (B x F), and step 3 computes ``G^T R`` with no decay term (the same update,
   ``G^T X - G^T G W``, in about 2.4x fewer flops at B256 784->1024, as the C++ path does).
3. ``_apply_kernel``: per (units, features) tile, ``acc = G^T X`` (K over the batch) then
   ``acc -= D W`` (K over units, stopping at the diagonal block when ``D`` is lower-triangular;
   the tiles with the longest loops are launched first), and the epilogue writes ``W + lr/B * acc`` to a fresh buffer, copied back into ``W`` (tiles
   read rows of ``W`` that other tiles update, so the update cannot be written in place). Without
   decay a tile reads only its own ``W`` and writes in place.
4. BCM only: ``_bcm_theta_kernel`` reduces the partials and moves ``theta`` in place.

Competitive rules (instar = top-k winners, krotov = +1 winner / -delta k-th), sparse:

1. ``_matmul_kernel``: ``U = X W~^T``, with the p-norm transform ``sign(w)|w|^(p-1)`` applied to
   ``W`` tiles as they are loaded (``p = 2``: none); from ``CUBLAS_MIN_MACS`` (fp32) /
   ``CUBLAS_MIN_MACS_TF32`` (tf32) multiply-adds cuBLAS instead (``_sparse_currents``).
2. ``_rank_kernel``: one program per sample walks its row ``k`` times, each pass taking the best
   entry below the previous one in the order (value descending, ties to the lower index); it
   writes the selected (unit, g, h) triples, ``h = g`` (instar) or ``g * U`` (krotov).
3. torch ops on the E = B*k (or B*2) selections, no host sync: a stable ``argsort`` by unit,
   segment heads, ``cumsum`` and ``searchsorted`` give where each selected unit's run starts.
4. ``_sparse_apply_kernel``: one program per (segment, feature block), at most min(N, E)
   segments, walks one unit's selections in sample order and writes
   ``w + lr/B (sum g x_b - (sum h) w)`` in place. Only selected rows are written; no atomics, so
   the result is deterministic.

The cuBLAS path (dense rules without BCM's threshold, ``precision`` "ieee" or "tf32"; from
``CUBLAS_MIN_MACS`` / ``CUBLAS_MIN_MACS_TF32`` multiply-adds per update):
the GEMMs by cuBLAS (:func:`bpalts._precision.gemm_into`), the gate and the rest as torch
elementwise passes. ``G = g(X W^T)``; then

* subspace rules (full ``D``): ``R = X - G W`` (cuBLAS ``beta = 1`` into a copy of X) and
  ``W += lr/B G^T R`` in place (``W`` is not an operand of that product);
* hierarchical rules (``tril``): ``T = G^T X``, then by row panels of ``TRIL_PANELS``
  (``C_i = G_i^T G_{:i}``, its diagonal block made lower-triangular, ``T_i -= C_i W_{:i}``),
  so the triangular products skip most of the upper triangle (``(P + 1) / 2P`` of the flops of
  the full ``G^T G`` and ``D W``: 5/8 with 4 panels), then ``W += lr/B T``; or, with
  ``TRIL_FORM = "blocks"`` (the default), the residual form of :func:`_tril_blocks` (batched
  GEMMs over blocks of units: fewer flops when the batch is under half the units);
* no decay: ``W += lr/B G^T X`` in place.

On an H200 the fused Triton kernels reached 0.58-0.88x cuBLAS in fp32 at B1024 4096->4096,
and with tf32 about 60-90 TFLOP/s against cuBLAS's several hundred (gha 1.66 ms for about 154
GFLOP): this path is for the shapes where the GEMMs dominate.

Plain calls of at most ``GRAPH_MAX_MACS`` multiply-adds (on a GPU) replay a
cached CUDA graph of their launches instead of launching them from Python
(:class:`bpalts.kernels._capture.PlainCallGraphs`): ``X`` is copied into the entry's buffer,
``W`` (and BCM's threshold) are read and updated in place, every scalar argument and module
setting is part of the key, and a configuration is captured at its third call (the first is
a plain call).

All strides are passed, so transposed and non-contiguous inputs need no copies. fp32 in and out;
``precision="ieee"`` (default) keeps fp32 products, ``"tf32"`` and ``"tf32x3"`` (fp32-level
accuracy, three products) use tensor cores and the tensor-core tiles.
"""
from __future__ import annotations

import sys

import torch
import triton
import triton.language as tl

from bpalts._precision import TENSOR_CORE_PRECISIONS, gemm_into, gemm_precision
from bpalts.kernels._capture import PlainCallGraphs, replays_here, settings_key, tensor_key
from bpalts.kernels._math import tanh as _tanh

GATE_IDS = {"identity": 0, "tanh": 1}
DECAY_IDS = {"none": 0, "tril": 1, "full": 2}

# Tile sizes. The interpreter (CPU) wants few, large programs; the GPU wants enough tiles to fill
# the SMs. bench/gpu_tiles.py sweeps them on a GPU.
BM, BN, BK = 64, 64, 32
# precision="tf32" (tensor cores). bench/gpu_tiles.py on an H200 (torch 2.11, Triton 3.6, CUDA
# graph replay, median of 20): GHA B1024 4096->4096 1.66 ms at 32 x 64 x 32 against 3.72 ms at
# 64 x 64 x 32 and 2.55 ms at 128 x 128 x 32 with 8 warps (the best of 11 configs).
BM_TF32, BN_TF32, BK_TF32 = 32, 64, 32
NUM_WARPS = 4
NUM_STAGES = 3  # software-pipelining depth of the K loops on the GPU (Triton's CUDA default)
RANK_BLOCK = 256  # row chunk of the ranking kernel
SPARSE_BD = 128  # feature block of the sparse apply kernel
# The cuBLAS path for dense updates with B * N * F >= CUBLAS_MIN_MACS at precision "ieee" (fp32),
# >= CUBLAS_MIN_MACS_TF32 at "tf32"; 0 = never. bench/gpu.py on an H100 (torch 2.11, Triton 3.6;
# plain call / CUDA graph, ms), B1024 4096->4096 against the Triton GEMMs:
#   fp32  GHA 3.95 / 3.95 against 5.54 / 5.56; Oja 2.08 / 2.07 against 4.08 / 4.07
#   tf32  GHA 0.78 / 0.78 against 1.75 / 1.74 (Oja 0.41 / 0.41 on this path)
# (The instar rows of that run did not use cuBLAS: the competitive rules' currents took it only
# from the eighteenth session on, _sparse_currents; H200, 2026-11-28: instar 0.905 / 0.895
# against 2.659 / 2.648 at B1024 4096->4096, 0.076 / 0.070 against 0.125 / 0.122 at B256
# 784->1024; krotov 0.905 / 0.891 against 2.740 / 2.732.)
# At B256 784->1024 (fp32 GHA) it lost the plain call (0.55 against 0.18; graph 0.115 against
# 0.160): the torch GEMM calls cost more host time than Triton's launches. Since the plain calls
# replay a cached graph (GRAPH_MAX_MACS) it wins there too (2026-11-28, H100,
# bench/results/2026-11-28-h100): GHA with TRIL_FORM "blocks" and the graph 0.086 / 0.083
# against the Triton path's 0.151 / 0.148 (also replayed) or 0.154 / 0.148 (plain); the default
# rows after the change: Oja 0.059 / 0.056 (was 0.140 / 0.122), hpca 0.088 / 0.084 (0.156 /
# 0.152), nlpca_sym 0.061 / 0.058 (0.497 / 0.124); GHA B1024 4096->4096 2.96 / 2.94 (4.00 / 3.99).
# fp32 from the B256 shape; tf32 at the smallest shape timed where it won.
CUBLAS_MIN_MACS = 256 * 1024 * 784
CUBLAS_MIN_MACS_TF32 = 1024 * 4096 * 4096
# Row panels of the cuBLAS path's triangular products (fewer when N is small). bench/gpu_tiles.py
# on an H100 (CUDA graph replay), GHA: B256 784->1024 fp32 1 / 2 / 4 / 8 panels 0.115 / 0.118 /
# 0.134 / 0.195 ms; B1024 4096->4096 tf32 0.901 / 0.798 / 0.808 / 0.866 ms.
TRIL_PANELS = 2
TRIL_PANEL_MIN = 256
# How the cuBLAS path computes the hierarchical rules' decay: "panels" (the row panels above) or
# "blocks" (_tril_blocks: the residual form, every block of TRIL_BLOCK units at once as batched
# GEMMs; fewer flops when B < N / 2: 0.73 against 1.23 G multiply-adds at B256 784->1024,
# 69 against 99 G at B1024 4096->4096). "blocks" won every row timed (H100, 2026-11-28; plain /
# graph ms): B256 784->1024 0.448 / 0.082 against 0.511 / 0.115, B1024 4096->4096 fp32 2.94 /
# 2.93 against 3.95 / 3.97, tf32 0.733 / 0.723 against 0.782 / 0.772. The residuals take nb x B x F floats: blocks
# grow past TRIL_BLOCK units to keep them under TRIL_RESID_MAX_BYTES.
TRIL_FORM = "blocks"
TRIL_BLOCK = 128
TRIL_RESID_MAX_BYTES = 64 << 20
# Plain calls of at most GRAPH_MAX_MACS multiply-adds (B * N * F) replayed from a cached CUDA
# graph (kernels/_capture.py PlainCallGraphs: X copied in, W read and updated in place; captured
# at a configuration's third call); 0 = never. Why: on an H100 a plain GHA call at B256
# 784->1024 took 0.23 ms of host time (cProfile: three Triton launches at ~60 us each) against
# 0.15 ms on the device. Timed (H100, 2026-11-28, plain call with / without): GHA B256 Triton
# 0.151 / 0.154 ms, cuBLAS blocks 0.086 / 0.448, tf32x3 0.084 / 0.158. Up to the largest shape
# as softwta_update's, where the same replay won at B1024 4096->4096 tf32 (0.397 / 0.429); no
# Hebbian row has timed it there.
GRAPH_MAX_MACS = 1024 * 4096 * 4096
GRAPH_CACHE_MAX = 8  # configurations kept (each holds its input buffers, its graph, and W)
_graphs = PlainCallGraphs(GRAPH_CACHE_MAX)


def _tiles(precision: str) -> tuple[int, int, int]:
    """(BLOCK_M, BLOCK_N, BLOCK_K) of every GEMM launch at this ``input_precision``."""
    return (BM_TF32, BN_TF32, BK_TF32) if precision in TENSOR_CORE_PRECISIONS else (BM, BN, BK)


@triton.jit
def _matmul_kernel(
    A, Bm, Out, M, N, K,
    s_am, s_ak, s_bk, s_bn, s_om, s_on,
    Theta, Sq, s_sq, pm1, C, s_cm, s_cn,
    GATE: tl.constexpr, LOWER: tl.constexpr, PRECISION: tl.constexpr,
    BPOW: tl.constexpr, BCM: tl.constexpr, RESID: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
):
    """Out[M, N] = s(gate(A[M, K] @ f(B[K, N]))); with LOWER, entries above the diagonal are 0;
    with RESID, Out = C[M, N] - A @ B (the residual X - G W of the subspace rules).

    f (BPOW): 0 identity, 1 sign(b), 2 sign(b) |b|^pm1. s (BCM): identity, or y (y - Theta[n])
    with Sq[pid_m, n] = sum over this tile's rows of y^2.
    """
    pid_m = tl.program_id(0)
    pid_n = tl.program_id(1)
    rm = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    rn = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    rk = tl.arange(0, BLOCK_K)
    k_end = K
    if LOWER:
        # A tile wholly above the diagonal (first column > last row) is zero: skip its K loop.
        k_end = tl.where(pid_n * BLOCK_N > pid_m * BLOCK_M + BLOCK_M - 1, 0, K)
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    for k0 in range(0, k_end, BLOCK_K):
        kk = k0 + rk
        a = tl.load(A + rm[:, None] * s_am + kk[None, :] * s_ak,
                    mask=(rm[:, None] < M) & (kk[None, :] < K), other=0.0)
        b = tl.load(Bm + kk[:, None] * s_bk + rn[None, :] * s_bn,
                    mask=(kk[:, None] < K) & (rn[None, :] < N), other=0.0)
        if BPOW == 1:
            b = tl.where(b > 0, 1.0, tl.where(b < 0, -1.0, 0.0)).to(tl.float32)
        elif BPOW == 2:
            ab = tl.abs(b)
            # ln|b|, exact for subnormal |b| too: scaled by 2^64 into the normal range first
            # (the p-norm transform of a subnormal weight is not negligible for p < 2)
            tiny = ab < 5.421010862427522e-20  # 2^-64
            scaled = tl.where(ab > 0, tl.where(tiny, ab * 1.8446744073709552e19, ab), 1.0)
            lnb = tl.log(scaled) - tl.where(tiny, 44.3614195558365, 0.0)  # 64 ln 2
            mag = tl.where(ab > 0, tl.exp(pm1 * lnb), 0.0)
            # (.to: the interpreter passes the float argument pm1 as fp64)
            b = tl.where(b < 0, -mag, mag).to(tl.float32)
        acc += tl.dot(a, b, input_precision=PRECISION)
    if GATE == 1:
        acc = _tanh(acc)
    out_mask = (rm[:, None] < M) & (rn[None, :] < N)
    if BCM:
        th = tl.load(Theta + rn, mask=rn < N, other=0.0)
        ysq = tl.where(out_mask, acc * acc, 0.0)
        tl.store(Sq + pid_m * s_sq + rn, tl.sum(ysq, axis=0), mask=rn < N)
        acc = acc * (acc - th[None, :])
    if LOWER:
        acc = tl.where(rm[:, None] >= rn[None, :], acc, 0.0)
    if RESID:
        acc = tl.load(C + rm[:, None] * s_cm + rn[None, :] * s_cn, mask=out_mask, other=0.0) - acc
    tl.store(Out + rm[:, None] * s_om + rn[None, :] * s_on, acc, mask=out_mask)


@triton.jit
def _apply_kernel(
    G, X, Dm, W, Wout, B, N, F, scale,
    s_gb, s_gn, s_xb, s_xf, s_dn, s_dm, s_wn, s_wf, s_on, s_of,
    DECAY: tl.constexpr, PRECISION: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
):
    """Wout[n, f] = W[n, f] + scale * (sum_b G[b, n] X[b, f] - sum_m D[n, m] W[m, f]).

    DECAY: 0 no D (Dm unused), 1 lower-triangular D, 2 full D.

    One program per (units, features) tile on a 1-D grid, the last unit blocks first: with a
    lower-triangular D the decay loop of unit block m runs to its diagonal block, so block m
    costs about B + (m + 1) BLOCK_M multiply-add steps; starting the longest ones first (LPT
    order) keeps the shortest for the tail of the launch. On H100s (bench/gpu.py, CUDA graph; two
    runs on two machines, not one): B256 784->1024 GHA 0.149 ms against 0.160-0.161 before,
    hpca 0.152 against 0.163-0.164, GHA at tf32x3 0.082 against 0.090-0.092.
    """
    n_tiles = tl.cdiv(F, BLOCK_N)
    p = tl.program_id(0)
    pid_m = tl.cdiv(N, BLOCK_M) - 1 - p // n_tiles  # over units, last first
    pid_n = p % n_tiles  # over features
    rm = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    rf = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    rk = tl.arange(0, BLOCK_K)
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    # Hebbian term G^T X: K runs over the batch.
    for k0 in range(0, B, BLOCK_K):
        kk = k0 + rk
        g = tl.load(G + kk[None, :] * s_gb + rm[:, None] * s_gn,
                    mask=(rm[:, None] < N) & (kk[None, :] < B), other=0.0)
        x = tl.load(X + kk[:, None] * s_xb + rf[None, :] * s_xf,
                    mask=(kk[:, None] < B) & (rf[None, :] < F), other=0.0)
        acc += tl.dot(g, x, input_precision=PRECISION)
    if DECAY != 0:
        # Decay term D W: K runs over units; a lower-triangular D stops after the diagonal block.
        m_end = N
        if DECAY == 1:
            m_end = tl.minimum(N, (pid_m + 1) * BLOCK_M)
        for k0 in range(0, m_end, BLOCK_K):
            kk = k0 + rk
            d = tl.load(Dm + rm[:, None] * s_dn + kk[None, :] * s_dm,
                        mask=(rm[:, None] < N) & (kk[None, :] < N), other=0.0)
            w = tl.load(W + kk[:, None] * s_wn + rf[None, :] * s_wf,
                        mask=(kk[:, None] < N) & (rf[None, :] < F), other=0.0)
            acc -= tl.dot(d, w, input_precision=PRECISION)
    mask = (rm[:, None] < N) & (rf[None, :] < F)
    w_old = tl.load(W + rm[:, None] * s_wn + rf[None, :] * s_wf, mask=mask, other=0.0)
    tl.store(Wout + rm[:, None] * s_on + rf[None, :] * s_of, w_old + scale * acc, mask=mask)


@triton.jit
def _bcm_theta_kernel(Sq, Theta, T, N, inv_b, rate, s_sq, s_th, BLOCK: tl.constexpr):
    """Theta[n] += rate * (inv_b * sum_t Sq[t, n] - Theta[n]), in place."""
    rn = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    mask = rn < N
    tot = tl.zeros((BLOCK,), dtype=tl.float32)
    for t in range(0, T):
        tot += tl.load(Sq + t * s_sq + rn, mask=mask, other=0.0)
    th = tl.load(Theta + rn * s_th, mask=mask, other=0.0)
    tl.store(Theta + rn * s_th, th + rate * (tot * inv_b - th), mask=mask)


@triton.jit
def _rank_kernel(
    U, Sel, Gv, Hv, B, N, K, s_ub, s_un, neg_delta,
    RANK: tl.constexpr, BLOCK_B: tl.constexpr, BLOCK: tl.constexpr,
):
    """Per sample b (BLOCK_B samples per program): the K best units of U[b] in the order
    (value desc, index asc), found by K passes over the row, each taking the best entry after the
    previous pick in that order.

    RANK False (topk): slots 0..K-1 get (unit, g=1, h=1). RANK True: slot 0 gets the best
    (unit, 1, U), slot 1 the K-th (unit, -delta, -delta * U). Sel/Gv/Hv are (B, S) contiguous.
    """
    rb = tl.program_id(0) * BLOCK_B + tl.arange(0, BLOCK_B)
    bmask = rb < B
    S = K
    if RANK:
        S = 2
    # The previous pick per row: (value, index); +inf / -1 before the first pass.
    pv = tl.full((BLOCK_B,), float("inf"), tl.float32)
    pi = tl.full((BLOCK_B,), -1, tl.int32)
    top_v = tl.zeros((BLOCK_B,), tl.float32)
    top_i = tl.zeros((BLOCK_B,), tl.int32)
    for j in range(0, K):
        bv = tl.full((BLOCK_B,), float("-inf"), tl.float32)
        bi = tl.full((BLOCK_B,), 0, tl.int32) + N
        for c0 in range(0, N, BLOCK):
            idx = c0 + tl.arange(0, BLOCK)
            valid = bmask[:, None] & (idx[None, :] < N)
            v = tl.load(U + rb[:, None] * s_ub + idx[None, :] * s_un, mask=valid, other=float("-inf"))
            elig = valid & ((v < pv[:, None]) | ((v == pv[:, None]) & (idx[None, :] > pi[:, None])))
            cand = tl.where(elig, v, float("-inf"))
            cmax = tl.max(cand, axis=1)
            ci = tl.min(tl.where(elig & (cand == cmax[:, None]), idx[None, :], N), axis=1)
            take = (cmax > bv) | ((cmax == bv) & (ci < bi))
            bv = tl.where(take, cmax, bv)
            bi = tl.where(take, ci, bi)
        # No eligible entry (the row's remaining currents are NaN, which compare false): select
        # a real unit (never index N) and make its update NaN, so the non-finite input shows in W.
        none = bi >= N
        bi = tl.where(none, N - 1, bi)
        bv = tl.where(none, float("nan"), bv)
        if RANK:
            top_v = tl.where(j == 0, bv, top_v)
            top_i = tl.where(j == 0, bi, top_i)
        else:
            gh = tl.where(none, float("nan"), 1.0)
            tl.store(Sel + rb * S + j, bi, mask=bmask)
            tl.store(Gv + rb * S + j, gh, mask=bmask)
            tl.store(Hv + rb * S + j, gh, mask=bmask)
        pv = bv
        pi = bi
    if RANK:
        one = tl.full((BLOCK_B,), 1.0, tl.float32)
        tl.store(Sel + rb * S, top_i, mask=bmask)
        tl.store(Gv + rb * S, one, mask=bmask)
        tl.store(Hv + rb * S, top_v, mask=bmask)
        tl.store(Sel + rb * S + 1, pi, mask=bmask)
        tl.store(Gv + rb * S + 1, one * neg_delta, mask=bmask)
        # (rows past B have pv = -inf: zero them so -inf * 0 makes no NaN, even masked)
        tl.store(Hv + rb * S + 1, tl.where(bmask, pv, 0.0) * neg_delta, mask=bmask)


@triton.jit
def _sparse_apply_kernel(
    W, X, Order, SortedUnit, SegStart, Gv, Hv, E, F, S, scale,
    s_wn, s_wf, s_xb, s_xf,
    BLOCK_F: tl.constexpr,
):
    """Segment j = program 0 (one per selected unit), features block = program 1. The segment
    SegStart[j] .. SegStart[j+1] of the unit-sorted selections belongs to unit n = SortedUnit[...];
    in place W[n] += scale * (sum g X[b] - (sum h) W[n]) over it (selection e -> sample e // S).
    A start of E means no segment: the program writes nothing."""
    j = tl.program_id(0)
    rf = tl.program_id(1) * BLOCK_F + tl.arange(0, BLOCK_F)
    fmask = rf < F
    st = tl.load(SegStart + j)
    en = tl.load(SegStart + j + 1)
    n = tl.load(SortedUnit + tl.minimum(st, E - 1))
    acc = tl.zeros((BLOCK_F,), dtype=tl.float32)
    hs = 0.0
    for i in range(st, en):
        e = tl.load(Order + i)
        g = tl.load(Gv + e)
        hs += tl.load(Hv + e)
        x = tl.load(X + (e // S) * s_xb + rf * s_xf, mask=fmask, other=0.0)
        acc += g * x
    mask = fmask & (st < en)
    w = tl.load(W + n * s_wn + rf * s_wf, mask=mask, other=0.0)
    tl.store(W + n * s_wn + rf * s_wf, w + scale * (acc - hs * w), mask=mask)


def _cublas_precision(precision: str, macs: int) -> str | None:
    """The cuBLAS precision (``"fp32"`` / ``"tf32"``) of an update of ``macs`` = ``B * N * F``
    multiply-adds at Triton ``precision`` when it reaches ``CUBLAS_MIN_MACS`` /
    ``CUBLAS_MIN_MACS_TF32`` (read at call time: the bench switches them), else None."""
    min_macs = {"ieee": CUBLAS_MIN_MACS, "tf32": CUBLAS_MIN_MACS_TF32}.get(precision, 0)
    if not 0 < min_macs <= macs:
        return None
    return "fp32" if precision == "ieee" else precision


def _forward(X, W, gate: str = "identity", precision: str = "ieee", p: float = 2.0,
             theta=None):
    """U = gate(X W~^T) (B x N) with W~ = sign(W)|W|^(p-1); with theta, the BCM G and the
    per-batch-tile partial sums of Y^2 (returned second, else None)."""
    B, F = X.shape
    N = W.shape[0]
    out = torch.empty((B, N), device=W.device, dtype=torch.float32)
    bpow = 0 if p == 2.0 else (1 if p == 1.0 else 2)
    bm, bn, bk = _tiles(precision)
    grid = (triton.cdiv(B, bm), triton.cdiv(N, bn))
    sq = None
    if theta is not None:
        sq = torch.empty((grid[0], N), device=W.device, dtype=torch.float32)
    _matmul_kernel[grid](
        X, W, out, B, N, F,
        X.stride(0), X.stride(1), W.stride(1), W.stride(0), out.stride(0), out.stride(1),
        theta if theta is not None else out, sq if sq is not None else out,
        sq.stride(0) if sq is not None else 0, float(p - 1.0), out, 0, 0,
        GATE=GATE_IDS[gate], LOWER=False, PRECISION=precision, BPOW=bpow, BCM=theta is not None,
        RESID=False,
        BLOCK_M=bm, BLOCK_N=bn, BLOCK_K=bk, num_warps=NUM_WARPS, num_stages=NUM_STAGES,
    )
    return out, sq


def hebbian_update(W: torch.Tensor, X: torch.Tensor, gate: str, decay: str, lr: float,
                   precision: str = "ieee", theta: torch.Tensor | None = None,
                   theta_rate: float = 0.0) -> None:
    """In place on W (N x F, float32): one dense update; inputs are validated by bpalts.ops.

    With ``theta`` (N,), the BCM selection ``G = Y (Y - theta)`` and ``theta`` moves in place.
    Up to GRAPH_MAX_MACS multiply-adds, on a GPU, replayed from a cached CUDA graph.
    """
    if not replays_here(W, X, GRAPH_MAX_MACS):
        return _dense_update(W, X, gate, decay, lr, precision, theta, theta_rate)
    key = ("dense", str(W.device), tuple(X.shape), X.dtype, gate, decay, float(lr), precision,
           float(theta_rate), tensor_key(W, theta), settings_key(sys.modules[__name__]))
    _graphs.run(key, (X,), (W, theta),
                lambda Xs: _dense_update(W, Xs, gate, decay, lr, precision, theta, theta_rate))


def _dense_update(W: torch.Tensor, X: torch.Tensor, gate: str, decay: str, lr: float,
                  precision: str = "ieee", theta: torch.Tensor | None = None,
                  theta_rate: float = 0.0) -> None:
    """:func:`hebbian_update` itself (always launched here)."""
    B, F = X.shape
    N = W.shape[0]
    if theta is not None and theta.stride(0) == 0:
        raise ValueError("theta must not be a broadcast (stride-0) view: it is updated in place")
    cublas_precision = _cublas_precision(precision, B * N * F)
    if theta is None and cublas_precision is not None:
        with gemm_precision(W, cublas_precision):
            _hebbian_update_cublas(W, X, gate, decay, lr, cublas_precision)
        return
    th_in = None
    if theta is not None:
        th_in = theta if theta.is_contiguous() else theta.contiguous()
    G, sq = _forward(X, W, gate, precision, theta=th_in)
    bm, bn, bk = _tiles(precision)
    decay_id = DECAY_IDS[decay]
    D = G  # unused placeholder when there is no decay
    Xh = X  # what G^T multiplies: X, or the residual X - G W of the subspace rules
    if decay_id == DECAY_IDS["full"]:
        # G^T X - (G^T G) W = G^T (X - G W): a B x F residual instead of an N x N product, about
        # 2.4x fewer flops at B256 784->1024, and the update is then in place (no decay term).
        Xh = torch.empty((B, F), device=W.device, dtype=torch.float32)
        _matmul_kernel[(triton.cdiv(B, bm), triton.cdiv(F, bn))](
            G, W, Xh, B, F, N,
            G.stride(0), G.stride(1), W.stride(0), W.stride(1), Xh.stride(0), Xh.stride(1),
            G, G, 0, 0.0, X, X.stride(0), X.stride(1),
            GATE=0, LOWER=False, PRECISION=precision, BPOW=0, BCM=False, RESID=True,
            BLOCK_M=bm, BLOCK_N=bn, BLOCK_K=bk, num_warps=NUM_WARPS, num_stages=NUM_STAGES,
        )
        decay_id = DECAY_IDS["none"]
    elif decay_id != 0:
        D = torch.empty((N, N), device=W.device, dtype=torch.float32)
        _matmul_kernel[(triton.cdiv(N, bm), triton.cdiv(N, bn))](
            G, G, D, N, N, B,
            G.stride(1), G.stride(0), G.stride(0), G.stride(1), D.stride(0), D.stride(1),
            G, G, 0, 0.0, G, 0, 0,
            GATE=0, LOWER=decay_id == 1, PRECISION=precision, BPOW=0, BCM=False, RESID=False,
            BLOCK_M=bm, BLOCK_N=bn, BLOCK_K=bk, num_warps=NUM_WARPS, num_stages=NUM_STAGES,
        )
    # Without decay a tile reads only its own part of W: write in place.
    Wout = W if decay_id == 0 else torch.empty((N, F), device=W.device, dtype=torch.float32)
    _apply_kernel[(triton.cdiv(N, bm) * triton.cdiv(F, bn),)](
        G, Xh, D, W, Wout, B, N, F, lr / B,
        G.stride(0), G.stride(1), Xh.stride(0), Xh.stride(1), D.stride(0), D.stride(1),
        W.stride(0), W.stride(1), Wout.stride(0), Wout.stride(1),
        DECAY=decay_id, PRECISION=precision,
        BLOCK_M=bm, BLOCK_N=bn, BLOCK_K=bk, num_warps=NUM_WARPS, num_stages=NUM_STAGES,
    )
    if Wout is not W:
        W.copy_(Wout)
    if theta is not None:
        _bcm_theta_kernel[(triton.cdiv(N, 128),)](
            sq, th_in, sq.shape[0], N, 1.0 / B, float(theta_rate), sq.stride(0), th_in.stride(0),
            BLOCK=128,
        )
        if th_in is not theta:
            theta.copy_(th_in)


def _hebbian_update_cublas(W, X, gate: str, decay: str, lr: float, precision: str) -> None:
    """The cuBLAS path of :func:`hebbian_update` (see the module docs); ``precision`` "fp32" or
    "tf32" (cuBLAS's)."""
    B, F = X.shape
    N = W.shape[0]
    f32 = dict(device=W.device, dtype=torch.float32)
    scale = lr / B
    G = torch.empty((B, N), **f32)
    gemm_into(G, X, W.t(), precision)
    if gate == "tanh":
        torch.tanh(G, out=G)
    if decay == "full":  # G^T X - (G^T G) W = G^T (X - G W)
        R = torch.empty((B, F), **f32)
        R.copy_(X)
        gemm_into(R, G, W, precision, alpha=-1.0, accumulate=True)
        gemm_into(W, G.t(), R, precision, alpha=scale, accumulate=True)
        return
    if decay == "none":
        gemm_into(W, G.t(), X, precision, alpha=scale, accumulate=True)
        return
    if TRIL_FORM == "blocks":
        _tril_blocks(W, X, G, scale, precision)
        return
    T = torch.empty((N, F), **f32)
    gemm_into(T, G.t(), X, precision)
    panel = max(TRIL_PANEL_MIN, triton.cdiv(triton.cdiv(N, TRIL_PANELS), 64) * 64)
    work = torch.empty(min(panel, N) * N, **f32)
    for i0 in range(0, N, panel):
        i1 = min(N, i0 + panel)
        C = work[:(i1 - i0) * i1].view(i1 - i0, i1)  # rows i0..i1 of G^T G, columns < i1
        gemm_into(C, G[:, i0:i1].t(), G[:, :i1], precision)
        C[:, i0:i1].tril_()
        gemm_into(T[i0:i1], C, W[:i1], precision, alpha=-1.0, accumulate=True)
    W.add_(T, alpha=scale)


def _tril_block_size(B: int, N: int, F: int) -> int:
    """Units per block of :func:`_tril_blocks`: ``TRIL_BLOCK``, or more where the residuals of
    that many blocks (``blocks x B x F`` floats) would pass ``TRIL_RESID_MAX_BYTES``."""
    max_blocks = max(1, TRIL_RESID_MAX_BYTES // (4 * B * F))
    return min(N, max(TRIL_BLOCK, triton.cdiv(N, max_blocks)))


def _tril_blocks(W, X, G, scale: float, precision: str) -> None:
    r"""``W += scale (G^T X - tril(G^T G) W)`` in its residual block form (``TRIL_FORM =
    "blocks"``), in place. With the units cut into blocks ``i`` of ``b`` (the last may be
    shorter),

    .. math::

        R_i = X - \sum_{j<i} G_j W_j,\qquad
        \Delta W_i = G_i^\top R_i - \operatorname{tril}(G_i^\top G_i)\, W_i

    (Sanger's per-sample ``dw_i = g_i (x - sum_{j<=i} g_j w_j)``, a block at a time, as the C++
    path computes it). Unlike the C++ path's loop, every block here runs at once, as batched
    GEMMs: ``P_j = G_j W_j`` for all blocks but the last (one batched GEMM, written negated
    into the residual buffer after ``R_0 = X``), a cumulative sum over the blocks gives every
    ``R_i``, then ``G_i^T R_i`` and ``G_i^T G_i`` (batched), the triangles and
    ``-tril(C_ii) W_i`` (batched, accumulated), ``W += scale T``. Multiply-adds
    ``B N F (3 - 1/nb) + N b (B + F)`` against the panel form's
    ``2 B N F + (N^2 (B + F)) (P + 1) / 2P``: 0.73 G against 1.23 G at B256 784->1024 (2
    panels), because ``B << N`` makes the residual cheaper than the units-by-units decay
    matrix. Memory: the residuals, ``nb x B x F`` floats (see ``_tril_block_size``)."""
    B, F = X.shape
    N = W.shape[0]
    f32 = dict(device=W.device, dtype=torch.float32)
    b = _tril_block_size(B, N, F)
    nf = N // b  # full blocks
    nb = triton.cdiv(N, b)  # all blocks (the last may be partial)
    blocks = lambda t, n: t.unflatten(0, (n, b))  # noqa: E731  rows of t as (n, b, ...) blocks
    Gt = G.t()  # (N, B): block i's G_i^T is Gt[i b:(i + 1) b]
    R = torch.empty((nb, B, F), **f32)
    R[0].copy_(X)
    if nb > 1:
        m = nb - 1  # P_j for j < nb - 1: always full blocks
        Gm = blocks(Gt[:m * b], m)  # (m, b, B): G_j^T
        gemm_into(R[1:], Gm.transpose(1, 2), blocks(W[:m * b], m), precision, alpha=-1.0)
        R.cumsum_(0)  # R_i = X - sum_{j<i} P_j (R_0 = X): one pass, no separate "+ X"
    T = torch.empty((N, F), **f32)
    C = torch.empty((nb, b, b), **f32)
    if nf:
        Gf = blocks(Gt[:nf * b], nf)  # (nf, b, B)
        Tf = blocks(T[:nf * b], nf)
        gemm_into(Tf, Gf, R[:nf], precision)
        gemm_into(C[:nf], Gf, Gf.transpose(1, 2), precision)
        C[:nf].tril_()
        gemm_into(Tf, C[:nf], blocks(W[:nf * b], nf), precision, alpha=-1.0, accumulate=True)
    if nb > nf:  # the last, partial block
        k = N - nf * b
        Gl, Cl = Gt[nf * b:], C[nf, :k, :k]
        gemm_into(T[nf * b:], Gl, R[nf], precision)
        gemm_into(Cl, Gl, Gl.t(), precision)
        Cl.tril_()
        gemm_into(T[nf * b:], Cl, W[nf * b:], precision, alpha=-1.0, accumulate=True)
    W.add_(T, alpha=scale)


def hebbian_sparse_update(W: torch.Tensor, X: torch.Tensor, select: str, k: int, delta: float,
                          p: float, lr: float, precision: str = "ieee",
                          currents: torch.Tensor | None = None) -> None:
    """In place on W (N x F, float32): one competitive update touching only selected rows.

    ``select``: ``"topk"`` (instar: the k best units of each sample, g = 1) or ``"rank"`` (krotov:
    the best g = 1, the k-th g = -delta); currents ``U = X (sign(W)|W|^(p-1))^T``, computed here
    unless given as ``currents`` (B x N, float32, any strides). Up to GRAPH_MAX_MACS
    multiply-adds, on a GPU, replayed from a cached CUDA graph (``currents`` copied in too).
    """
    if not replays_here(W, X, GRAPH_MAX_MACS):
        return _sparse_update(W, X, select, k, delta, p, lr, precision, currents)
    key = ("sparse", str(W.device), tuple(X.shape), X.dtype, select, int(k), float(delta),
           float(p), float(lr), precision, currents is not None, tensor_key(W),
           settings_key(sys.modules[__name__]))
    inputs = (X,) if currents is None else (X, currents)
    _graphs.run(key, inputs, (W,),
                lambda Xs, Us=None: _sparse_update(W, Xs, select, k, delta, p, lr, precision, Us))


def _sparse_currents(X: torch.Tensor, W: torch.Tensor, p: float, precision: str) -> torch.Tensor:
    """The competitive rules' currents ``U = X W~^T`` (B x N), ``W~ = sign(W)|W|^(p-1)``: from
    ``CUBLAS_MIN_MACS`` (fp32) / ``CUBLAS_MIN_MACS_TF32`` (tf32) multiply-adds by cuBLAS (``W~``
    formed first by one elementwise pass when ``p != 2``), below them (and at tf32x3) by
    ``_matmul_kernel`` with the transform applied to ``W`` tiles as they load. Why: the ranking
    and the sparse apply are cheap, so the forward GEMM is the update's cost, and Triton's fp32
    ``tl.dot`` ran it at about a third of cuBLAS's speed (H200, 2026-11-28, B1024 4096->4096:
    instar 2.70 ms against 1.55 for the eager reference, whose two cuBLAS GEMMs include the dense
    ``G^T X``)."""
    B, F = X.shape
    N = W.shape[0]
    cublas_precision = _cublas_precision(precision, B * N * F)
    if cublas_precision is None:
        return _forward(X, W, "identity", precision, p=p)[0]
    Wt = W if p == 2.0 else W.sign() * W.abs().pow(p - 1.0)
    U = torch.empty((B, N), device=W.device, dtype=torch.float32)
    with gemm_precision(W, cublas_precision):
        gemm_into(U, X, Wt.t(), cublas_precision)
    return U


def _sparse_update(W: torch.Tensor, X: torch.Tensor, select: str, k: int, delta: float,
                   p: float, lr: float, precision: str = "ieee",
                   currents: torch.Tensor | None = None) -> None:
    """:func:`hebbian_sparse_update` itself (always launched here)."""
    B, F = X.shape
    N = W.shape[0]
    U = _sparse_currents(X, W, p, precision) if currents is None else currents
    rank = select == "rank"
    S = 2 if rank else k
    sel = torch.empty((B, S), device=W.device, dtype=torch.int32)
    gv = torch.empty((B, S), device=W.device, dtype=torch.float32)
    hv = torch.empty((B, S), device=W.device, dtype=torch.float32)
    block_b = 16
    _rank_kernel[(triton.cdiv(B, block_b),)](
        U, sel, gv, hv, B, N, k, U.stride(0), U.stride(1), -float(delta),
        RANK=rank, BLOCK_B=block_b, BLOCK=min(RANK_BLOCK, max(16, triton.next_power_of_2(N))),
    )
    # Group the selections by unit, in sample order, without a host sync: sort, mark segment
    # heads, and find where segment j starts (E when there are fewer than j + 1 segments).
    E = B * S
    units = sel.view(-1)
    order = torch.argsort(units, stable=True)
    sorted_units = units[order]
    head = torch.ones(E, dtype=torch.bool, device=W.device)
    head[1:] = sorted_units[1:] != sorted_units[:-1]
    seg = torch.cumsum(head, 0) - 1
    n_seg = min(N, E)  # an upper bound on the number of selected units
    probe = torch.arange(n_seg + 1, device=W.device, dtype=seg.dtype)
    seg_start = torch.searchsorted(seg, probe).to(torch.int32)
    _sparse_apply_kernel[(n_seg, triton.cdiv(F, SPARSE_BD))](
        W, X, order.to(torch.int32), sorted_units, seg_start, gv, hv, E, F, S, lr / B,
        W.stride(0), W.stride(1), X.stride(0), X.stride(1),
        BLOCK_F=SPARSE_BD,
    )
