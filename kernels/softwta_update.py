r"""Triton kernels for :func:`bpalts.ops.softwta_update` (math: see that module).

``W += rate * dW / s`` with ``U = X W^T``, ``Y~ = sign * softmax(U / tau)``,
``dW = Y~^T X - diag(sum_b Y~ * U) W``, ``s = max|dW|`` (or the batch size), in three launches
(two without max-abs scaling):

1. ``_forward_kernel``: the forward GEMM ``U = X W^T`` per (batch, units) tile, and in its
   epilogue the softmax's partial row statistics of the tile: the tile's row max, its first
   argmax and ``sum exp((U - max) / tau)``; the tiles with ``pid_m == 0`` also write the squared
   norms of the rows of ``W`` (accumulated from the ``W`` tiles the K loop loads anyway).
   When there are many unit tiles, ``_rowstats_kernel`` folds the partials into per-row
   (max, 1 / sum, winner) once; with few (<= ``STATS_INLINE_MAX_TILES``) the next kernel folds
   them itself and that launch is skipped.
2. ``_update_kernel``: the update GEMM ``Y~^T X`` per (units, features) tile, K over the batch;
   the gate is computed on the fly from ``U`` and the row statistics (``Y~`` is never stored)
   and the same loop accumulates ``d_k = sum_b Y~_bk U_bk``. Epilogue: ``dW = acc - d W``;
   with max-abs scaling it is written to a buffer with the tile's ``max|dW|``; without, the
   tile applies ``W += rate * dW / B`` in place (a tile reads only its own elements of W).
3. ``_apply_kernel`` (max-abs scaling only): folds the tile maxima and applies
   ``W += rate * dW / (max + 1e-30)``, rate from the squared norms of kernel 1 (the old W).

The cuBLAS path (``precision`` "ieee" or "tf32"; from ``CUBLAS_MIN_MACS`` /
``CUBLAS_MIN_MACS_TF32`` multiply-adds per update; "tf32x3" from ``CUBLAS_MIN_MACS_TF32X3``,
off: timed on an H200 it was faster but not float32-level; as one TF32 GEMM of 3xTF32-split operands per product: kernels/_split_tf32.py) runs
both GEMMs in cuBLAS (:func:`bpalts._precision.gemm_into`) and the rest in three Triton passes:
``U = X W^T`` (cuBLAS); ``_cublas_gate_kernel`` (``GATE_ROWS`` rows per program: the row
softmax's max, first argmax and sum in one online pass, then ``Y~`` and the program's partial
column sums of ``Y~ U``); ``H = Y~^T X`` (cuBLAS); ``_cublas_dw_kernel`` (``DW_UNITS`` units per
program over all features: ``d`` from the partials, the old rows' squared norms and the
program's ``max|dW|`` with ``dW = H - d W``, which is not stored; without max-abs scaling it
applies the update itself); then ``_apply_kernel``, which recomputes ``dW`` from ``H``, ``d``
and the old ``W`` as it applies it (one N x F write and read fewer than storing dW). On an H200 the tf32 Triton GEMMs of this op ran at
about 60 TFLOP/s (1.16 ms for 69 GFLOP at B1024 4096->4096), far below cuBLAS's tensor-core
rate; this path is for the shapes where the GEMMs dominate.

Everything is deterministic (no atomics): partial results go to small buffers that the next
kernel reduces in a fixed order. fp32 throughout; the GEMMs use ``input_precision=precision``
(``"ieee"``: fp32 products, the default; ``"tf32"`` / ``"tf32x3"``: tensor cores, tensor-core
tiles).
All strides of ``W`` and ``X`` are passed: non-contiguous inputs need no copies.

Plain calls of at most ``GRAPH_MAX_MACS`` multiply-adds (on a GPU) replay a
cached CUDA graph of their launches instead of launching them from Python
(:class:`bpalts.kernels._capture.PlainCallGraphs`): ``X`` is copied into the entry's buffer,
``W`` is read and updated in place, every scalar argument and module setting is part of the
key, and a configuration is captured at its third call (the first is a plain call).
"""
from __future__ import annotations

import sys

import torch
import triton
import triton.language as tl

from bpalts._precision import TENSOR_CORE_PRECISIONS, gemm_into, gemm_precision
from bpalts.kernels._capture import PlainCallGraphs, replays_here, settings_key, tensor_key
from bpalts.kernels._split_tf32 import split3, store_parts

# Tiles. Forward GEMM: (batch, units, features); update GEMM: (units, features, batch).
# bench/gpu_tiles.py sweeps them on a GPU; tl.dot needs every block dimension >= 16.
BM1, BN1, BK1 = 32, 64, 32
BM2, BN2, BK2 = 64, 64, 32
# precision="tf32" (tensor cores). bench/gpu_tiles.py on an H200 (torch 2.11, Triton 3.6, CUDA
# graph replay, median of 20): B1024 4096->4096 1.16 ms with these against 2.18 ms with the fp32
# tiles above (the best of 10 configs; 128-wide tiles with 8 warps 1.32 ms).
BM1_TF32, BN1_TF32, BK1_TF32 = 128, 128, 32
BM2_TF32, BN2_TF32, BK2_TF32 = 128, 64, 32
# precision="tf32x3". The tf32 forward tile (128 x 128, 4 warps) spills 576 bytes per thread
# with tf32x3's three products on sm_90 (bench/sm90_compile.py, Triton 3.8). bench/gpu_tiles.py
# on an H100 (torch 2.11, Triton 3.6, CUDA graph replay, median of 20), B256 784->1024: 0.067 ms
# with a 64 x 64 forward tile against 0.082 with 128 x 64 (the best of 6 configs).
BM1_TF32X3, BN1_TF32X3, BK1_TF32X3 = 64, 64, 32
BR = 32  # rows per program of _rowstats_kernel
BA_M, BA_N = 32, 128  # apply tiles (units, features)
BT = 1024  # tile maxima folded per step in _apply_kernel
NUM_WARPS = 4
NUM_STAGES = 3  # software-pipelining depth of the K loops on the GPU (Triton's CUDA default)
# The cuBLAS path for B * N * F >= CUBLAS_MIN_MACS at precision "ieee" (fp32), >=
# CUBLAS_MIN_MACS_TF32 at "tf32"; 0 = never. bench/gpu.py on an H100 (torch 2.11, Triton 3.6;
# plain call / CUDA graph), B1024 4096->4096: fp32 1.53 / 1.52 ms against 5.89 / 5.89 for the
# Triton GEMMs; tf32 0.46-0.47 / 0.40 against 1.15 / 1.15. At tf32 its error (2.1e-3 and 5.1e-3
# from the fp32 reference on two seeds) is that of the tf32 specification itself (the reference
# with TF32-rounded operands: the same figures); the Triton path's was 6.6e-4-8.5e-4. At fp32
# B256 784->1024 it took 0.41-0.50 / 0.050 against 0.25-0.36 / 0.097: the plain call loses
# (torch's GEMM calls cost more host time than the launches they replace). Since plain calls
# replay a cached graph (GRAPH_MAX_MACS) it wins the plain call there too (H100, 2026-11-28,
# bench/results/2026-11-28-h100): 0.065 / 0.050 against the Triton path's 0.100 / 0.097 (also
# replayed) or 0.167 / 0.097; the default row after the change 0.055 / 0.051. fp32 from the
# B256 shape; tf32 at the smallest shape timed where it won.
CUBLAS_MIN_MACS = 256 * 1024 * 784
CUBLAS_MIN_MACS_TF32 = 1024 * 4096 * 4096
# The cuBLAS path at precision "tf32x3" from this many multiply-adds: each GEMM one TF32 GEMM of
# 3xTF32-split operands, K tripled (kernels/_split_tf32.py; the forward's W and X split per
# call). 0 = never (the Triton path's tl.dot tf32x3). Timed (H200, 2026-11-28, eighteenth
# session, bench/results/2026-11-28-h200; plain call / CUDA graph, ms): faster at B1024
# 4096->4096, 0.858 / 0.848 against the Triton path's 2.003 / 1.990, but not float32-level: its
# update's error from a float64 run was 5.3e-5 against the fp32 reference's 5.1e-6 (Triton's
# tf32x3 1.8e-5), and at B256 8.7e-6 against 1.9e-6 (Triton 2.5e-6). The CPU emulation
# (operands rounded, products in float32) had predicted parity: the tensor cores' accumulation
# loses more than that (bench/gpu_tf32x3_forms.py: 9-12x fp32's error on the GEMM alone even
# with one TF32 GEMM per term). Off: tf32x3 promises float32-level accuracy (bench/gpu_decide.py
# TF32X3_ERR64_FACTOR).
CUBLAS_MIN_MACS_TF32X3 = 0
GATE_ROWS, GATE_BN = 4, 512  # _cublas_gate_kernel: rows per program, units per chunk
# The cuBLAS path's forward GEMM U = X W^T split along the features into SPLIT_K parts (one
# batched GEMM; _cublas_gate_kernel sums the parts as it reads them) where F divides evenly;
# 1 = one GEMM. Why: on an H100 at B256 784->1024 cuBLAS ran U = X W^T as 64 tiles of 64 x 64
# on 132 SMs (16.1 us, 26 TFLOP/s: a third of the path's 48 us of device time). Timed (H100,
# 2026-11-28, plain / graph ms): B256 2 parts 0.206 / 0.048, 4 parts 0.227 / 0.049, one GEMM
# 0.234 / 0.051; B1024 4096->4096 tf32 2 parts 0.431 / 0.425 against 0.429 / 0.383. Too little
# at B256 and a loss at the large shape: off.
SPLIT_K = 1
DW_UNITS, DW_BF, DW_BP = 16, 256, 32  # _cublas_dw_kernel: units per program, feature chunk, partials chunk
# With at most this many unit tiles per row, _update_kernel folds the partial row statistics
# itself (cheap) instead of a separate _rowstats_kernel launch.
STATS_INLINE_MAX_TILES = 16
# Plain calls of at most GRAPH_MAX_MACS multiply-adds (B * N * F) replayed from a cached CUDA
# graph (kernels/_capture.py PlainCallGraphs: X copied in, W read and updated in place; captured
# at a configuration's third call); 0 = never. Why: on an H100 a plain call at B256 784->1024 took 0.23 ms of
# host time (cProfile: three Triton launches at ~60 us each) against 0.10 ms on the device
# (0.050 on the cuBLAS path, whose plain call took 0.32 ms of host time). Timed (H100,
# 2026-11-28, plain call with / without the replay, ms): B256 Triton 0.100 / 0.167, cuBLAS
# 0.065 / 0.234, tf32x3 0.068 / 0.144; B1024 4096->4096 tf32 (cuBLAS) 0.397 / 0.429 (the
# issue's 0.405 met by the plain call).
GRAPH_MAX_MACS = 1024 * 4096 * 4096
GRAPH_CACHE_MAX = 8  # configurations kept (each holds its input buffer, its graph, and W)
_graphs = PlainCallGraphs(GRAPH_CACHE_MAX)


@triton.jit
def _forward_kernel(
    X, W, U, PMAX, PSUM, PARG, NSQ, B, N, F, NT, inv_tau,
    s_xb, s_xf, s_wn, s_wf,
    PRECISION: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
):
    """U[B, N] = X @ W^T; per (row, unit tile): max, first argmax, sum exp((U - max) * inv_tau);
    NSQ[n] = |W_n|^2 (from the programs with pid_m == 0)."""
    pid_m = tl.program_id(0)  # batch
    pid_n = tl.program_id(1)  # units
    rm = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    rn = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    rk = tl.arange(0, BLOCK_K)
    mmask = rm < B
    nmask = rn < N
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    wsq = tl.zeros((BLOCK_N,), dtype=tl.float32)
    for k0 in range(0, F, BLOCK_K):
        kk = k0 + rk
        kmask = kk < F
        x = tl.load(X + rm[:, None] * s_xb + kk[None, :] * s_xf,
                    mask=mmask[:, None] & kmask[None, :], other=0.0)
        w = tl.load(W + kk[:, None] * s_wf + rn[None, :] * s_wn,
                    mask=kmask[:, None] & nmask[None, :], other=0.0)  # (K, N): a tile of W^T
        acc += tl.dot(x, w, input_precision=PRECISION)
        wsq += tl.sum(w * w, axis=0)
    tl.store(U + rm[:, None] * N + rn[None, :], acc, mask=mmask[:, None] & nmask[None, :])
    tl.store(NSQ + rn, wsq, mask=nmask & (pid_m == 0))
    # Softmax partials of this tile (padded units excluded).
    a = tl.where(nmask[None, :], acc, float("-inf"))
    tmax = tl.max(a, axis=1)
    targ = tl.argmax(a, axis=1)
    e = tl.where(nmask[None, :], tl.exp((a - tmax[:, None]) * inv_tau), 0.0)
    tsum = tl.sum(e, axis=1)
    p = rm * NT + pid_n
    tl.store(PMAX + p, tmax, mask=mmask)
    tl.store(PSUM + p, tsum, mask=mmask)
    tl.store(PARG + p, (targ + pid_n * BLOCK_N).to(tl.int32), mask=mmask)


@triton.jit
def _row_stats(PMAX, PSUM, PARG, rb, bmask, NT, inv_tau, NT_P2: tl.constexpr):
    """Fold the per-tile partials of rows ``rb``: (row max, 1 / sum exp, first argmax)."""
    rt = tl.arange(0, NT_P2)
    valid = bmask[:, None] & (rt[None, :] < NT)
    off = rb[:, None] * NT + rt[None, :]
    pm = tl.load(PMAX + off, mask=valid, other=float("-inf"))
    ps = tl.load(PSUM + off, mask=valid, other=0.0)
    m = tl.max(pm, axis=1)
    m = tl.where(bmask, m, 0.0)
    scale = tl.where(valid, tl.exp((pm - m[:, None]) * inv_tau), 0.0)
    s = tl.sum(ps * scale, axis=1)
    inv_s = 1.0 / tl.where(bmask, s, 1.0)
    # The winner: the first tile whose max is the row max, then that tile's first argmax.
    first = tl.min(tl.where(valid & (pm == m[:, None]), rt[None, :], NT_P2), axis=1)
    win = tl.load(PARG + rb * NT + first, mask=bmask & (first < NT), other=-1)
    return m, inv_s, win


@triton.jit
def _rowstats_kernel(PMAX, PSUM, PARG, RM, RINV, RWIN, B, NT, inv_tau,
                     NT_P2: tl.constexpr, BLOCK: tl.constexpr):
    rb = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    bmask = rb < B
    m, inv_s, win = _row_stats(PMAX, PSUM, PARG, rb, bmask, NT, inv_tau, NT_P2)
    tl.store(RM + rb, m, mask=bmask)
    tl.store(RINV + rb, inv_s, mask=bmask)
    tl.store(RWIN + rb, win, mask=bmask)


@triton.jit
def _unit_rate(NSQ, rn, nmask, coef, ADAPTIVE: tl.constexpr):
    """coef * |norm - 1|^0.5 per unit (from squared norms), or coef."""
    if ADAPTIVE:
        nsq = tl.load(NSQ + rn, mask=nmask, other=1.0)
        rate = coef * tl.sqrt(tl.abs(tl.sqrt(nsq) - 1.0))
    else:
        rate = tl.zeros(rn.shape, dtype=tl.float32) + coef
    return rate


@triton.jit
def _update_kernel(
    U, X, W, DW, TMAX, NSQ, PMAX, PSUM, PARG, RM, RINV, RWIN,
    B, N, F, NT, inv_tau, coef,
    s_xb, s_xf, s_wn, s_wf,
    ANTI: tl.constexpr, ADAPTIVE: tl.constexpr, MAXNORM: tl.constexpr,
    STATS_INLINE: tl.constexpr, NT_P2: tl.constexpr, PRECISION: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
):
    """acc = Y~^T X (gate on the fly), d = sum_b Y~ U; dW = acc - d W. MAXNORM: DW <- dW and
    TMAX[tile] <- max|dW|; else W += rate * dW in place (rate includes 1/B)."""
    pid_m = tl.program_id(0)  # units
    pid_n = tl.program_id(1)  # features
    rm = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    rf = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    rk = tl.arange(0, BLOCK_K)
    nmask = rm < N
    fmask = rf < F
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    dsum = tl.zeros((BLOCK_M,), dtype=tl.float32)
    for b0 in range(0, B, BLOCK_K):
        rb = b0 + rk
        bmask = rb < B
        if STATS_INLINE:
            m, inv_s, win = _row_stats(PMAX, PSUM, PARG, rb, bmask, NT, inv_tau, NT_P2)
        else:
            m = tl.load(RM + rb, mask=bmask, other=0.0)
            inv_s = tl.load(RINV + rb, mask=bmask, other=0.0)
            win = tl.load(RWIN + rb, mask=bmask, other=-1)
        valid = nmask[:, None] & bmask[None, :]
        u = tl.load(U + rb[None, :] * N + rm[:, None], mask=valid, other=0.0)  # (units, batch)
        y = tl.exp((u - m[None, :]) * inv_tau) * inv_s[None, :]
        if ANTI:
            y = tl.where(rm[:, None] == win[None, :], y, -y)
        y = tl.where(valid, y, 0.0)
        dsum += tl.sum(y * u, axis=1)
        x = tl.load(X + rb[:, None] * s_xb + rf[None, :] * s_xf,
                    mask=bmask[:, None] & fmask[None, :], other=0.0)
        acc += tl.dot(y, x, input_precision=PRECISION)
    mask = nmask[:, None] & fmask[None, :]
    wp = W + rm[:, None] * s_wn + rf[None, :] * s_wf
    w = tl.load(wp, mask=mask, other=0.0)
    dw = acc - dsum[:, None] * w
    if MAXNORM:
        tl.store(DW + rm[:, None] * F + rf[None, :], dw, mask=mask)
        tmax = tl.max(tl.max(tl.where(mask, tl.abs(dw), 0.0), axis=1), axis=0)
        tl.store(TMAX + pid_m * tl.num_programs(1) + pid_n, tmax)
    else:
        rate = _unit_rate(NSQ, rm, nmask, coef, ADAPTIVE)
        tl.store(wp, w + rate[:, None] * dw, mask=mask)


@triton.jit
def _apply_kernel(
    W, DW, TMAX, NSQ, DV, N, F, n_tiles, lr, s_wn, s_wf,
    ADAPTIVE: tl.constexpr, DECAY: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
    BLOCK_T: tl.constexpr,
):
    """W += rate * dW / (max(TMAX) + 1e-30), with dW = DW, or with DECAY ``DW - DV W`` (the
    cuBLAS path: DW holds ``H = Y~^T X``, DV the per-unit decay ``d``; recomputing the product
    here saves writing dW out and reading it back)."""
    rt = tl.arange(0, BLOCK_T)
    gm = tl.zeros((BLOCK_T,), dtype=tl.float32)
    for t0 in range(0, n_tiles, BLOCK_T):
        gm = tl.maximum(gm, tl.load(TMAX + t0 + rt, mask=t0 + rt < n_tiles, other=0.0))
    inv = 1.0 / (tl.max(gm, axis=0) + 1e-30)
    rm = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
    rf = tl.program_id(1) * BLOCK_N + tl.arange(0, BLOCK_N)
    nmask = rm < N
    mask = nmask[:, None] & (rf[None, :] < F)
    rate = _unit_rate(NSQ, rm, nmask, lr, ADAPTIVE)
    wp = W + rm[:, None] * s_wn + rf[None, :] * s_wf
    w = tl.load(wp, mask=mask, other=0.0)
    dw = tl.load(DW + rm[:, None] * F + rf[None, :], mask=mask, other=0.0)
    if DECAY:
        dw = dw - tl.load(DV + rm, mask=nmask, other=0.0)[:, None] * w
    tl.store(wp, w + rate[:, None] * (dw * inv), mask=mask)


@triton.jit
def _split_u(U, offs, mask, s_k, KS: tl.constexpr):
    """``U`` at ``offs``: the sum of its KS split-K parts, ``s_k`` elements apart."""
    u = tl.load(U + offs, mask=mask, other=0.0)
    for k in tl.static_range(1, KS):
        u += tl.load(U + k * s_k + offs, mask=mask, other=0.0)
    return u


@triton.jit
def _cublas_gate_kernel(U, Y, DP, B, N, inv_tau, s_k, ANTI: tl.constexpr, KS: tl.constexpr,
                        SPLIT: tl.constexpr, BLOCK_R: tl.constexpr, BLOCK_N: tl.constexpr):
    """Rows ``pid * BLOCK_R ..`` of U (B x N, contiguous; with KS > 1 the sum of KS split-K
    parts ``s_k`` elements apart): ``Y = sign * softmax(U / tau)`` (the first argmax +, the
    rest -, with ANTI) and ``DP[pid, n] = sum over the rows of Y U``. SPLIT (3xTF32): Y is
    (B, 3, N), each row as its TF32 parts ``[hi, hi, lo]`` (kernels/_split_tf32.py)."""
    pid = tl.program_id(0)
    rb = pid * BLOCK_R + tl.arange(0, BLOCK_R)
    bmask = rb < B
    m = tl.full((BLOCK_R,), float("-inf"), tl.float32)
    ssum = tl.zeros((BLOCK_R,), tl.float32)
    win = tl.zeros((BLOCK_R,), tl.int32)
    for n0 in range(0, N, BLOCK_N):  # online max / first argmax / sum exp
        rn = n0 + tl.arange(0, BLOCK_N)
        nmask = rn < N
        u = _split_u(U, rb[:, None] * N + rn[None, :], bmask[:, None] & nmask[None, :], s_k, KS)
        u = tl.where(nmask[None, :], u, float("-inf"))
        cm = tl.max(u, axis=1)
        carg = tl.argmax(u, axis=1).to(tl.int32) + n0
        newm = tl.maximum(m, cm)
        ssum = ssum * tl.exp((m - newm) * inv_tau) + tl.sum(tl.exp((u - newm[:, None]) * inv_tau), axis=1)
        win = tl.where(cm > m, carg, win)  # strictly greater: the first maximum wins
        m = newm
    inv_s = 1.0 / ssum
    for n0 in range(0, N, BLOCK_N):
        rn = n0 + tl.arange(0, BLOCK_N)
        nmask = rn < N
        msk = bmask[:, None] & nmask[None, :]
        u = _split_u(U, rb[:, None] * N + rn[None, :], msk, s_k, KS)
        y = tl.exp((u - m[:, None]) * inv_tau) * inv_s[:, None]
        if ANTI:
            y = tl.where(rn[None, :] == win[:, None], y, -y)
        y = tl.where(msk, y, 0.0)
        if SPLIT:
            store_parts(Y + rb[:, None] * 3 * N + rn[None, :], y, N, msk, 2)
        else:
            tl.store(Y + rb[:, None] * N + rn[None, :], y, mask=msk)
        tl.store(DP + pid * N + rn, tl.sum(y * u, axis=0), mask=nmask)


@triton.jit
def _cublas_dw_kernel(H, W, DP, NSQ, TMAX, DV, N, F, n_parts, coef, s_wn, s_wf,
                      MAXNORM: tl.constexpr, ADAPTIVE: tl.constexpr, BLOCK_M: tl.constexpr,
                      BLOCK_F: tl.constexpr, BLOCK_P: tl.constexpr):
    """Units ``pid * BLOCK_M ..``, every feature: ``d = sum_p DP[p]``, ``dW = H - d W``. MAXNORM:
    DV <- d, NSQ <- |w|^2 of the old rows, TMAX[pid] <- max|dW| (dW itself is not stored:
    ``_apply_kernel`` recomputes it); else W += rate * dW in place (rate = coef |norm - 1|^0.5
    or coef; coef includes 1/B)."""
    pid = tl.program_id(0)
    rm = pid * BLOCK_M + tl.arange(0, BLOCK_M)
    nmask = rm < N
    dacc = tl.zeros((BLOCK_P, BLOCK_M), tl.float32)
    for p0 in range(0, n_parts, BLOCK_P):
        rp = p0 + tl.arange(0, BLOCK_P)
        dacc += tl.load(DP + rp[:, None] * N + rm[None, :], mask=(rp[:, None] < n_parts) & nmask[None, :],
                        other=0.0)
    d = tl.sum(dacc, axis=0)
    nsq = tl.zeros((BLOCK_M,), tl.float32)
    if MAXNORM:
        tmax = tl.zeros((BLOCK_M,), tl.float32)
        for f0 in range(0, F, BLOCK_F):
            rf = f0 + tl.arange(0, BLOCK_F)
            msk = nmask[:, None] & (rf[None, :] < F)
            w = tl.load(W + rm[:, None] * s_wn + rf[None, :] * s_wf, mask=msk, other=0.0)
            h = tl.load(H + rm[:, None] * F + rf[None, :], mask=msk, other=0.0)
            dw = h - d[:, None] * w
            tmax = tl.maximum(tmax, tl.max(tl.abs(dw), axis=1))
            nsq += tl.sum(w * w, axis=1)
        tl.store(NSQ + rm, nsq, mask=nmask)
        tl.store(DV + rm, d, mask=nmask)
        tl.store(TMAX + pid, tl.max(tmax, axis=0))
    else:
        if ADAPTIVE:
            for f0 in range(0, F, BLOCK_F):
                rf = f0 + tl.arange(0, BLOCK_F)
                w = tl.load(W + rm[:, None] * s_wn + rf[None, :] * s_wf,
                            mask=nmask[:, None] & (rf[None, :] < F), other=0.0)
                nsq += tl.sum(w * w, axis=1)
            rate = coef * tl.sqrt(tl.abs(tl.sqrt(nsq) - 1.0))
        else:
            rate = tl.zeros((BLOCK_M,), tl.float32) + coef
        for f0 in range(0, F, BLOCK_F):
            rf = f0 + tl.arange(0, BLOCK_F)
            msk = nmask[:, None] & (rf[None, :] < F)
            wp = W + rm[:, None] * s_wn + rf[None, :] * s_wf
            w = tl.load(wp, mask=msk, other=0.0)
            h = tl.load(H + rm[:, None] * F + rf[None, :], mask=msk, other=0.0)
            tl.store(wp, w + rate[:, None] * (h - d[:, None] * w), mask=msk)


def _softwta_update_cublas(W, X, lr, temperature, anti_hebbian, adaptive_lr, max_normalize,
                           precision):
    """The cuBLAS path of :func:`softwta_update` (module docs); ``precision`` "fp32" / "tf32",
    or "tf32x3": each GEMM one TF32 GEMM of 3xTF32-split operands (kernels/_split_tf32.py):
    ``U = [X_hi, X_lo, X_hi] [W_hi, W_hi, W_lo]^T`` and ``H = Y3^T X3`` with the parts of the
    batch rows K-concatenated (``Y`` as ``[hi, hi, lo]``, written so by the gate kernel)."""
    B, F = X.shape
    N = W.shape[0]
    dev = W.device
    n_parts = triton.cdiv(B, GATE_ROWS)
    n_prog = triton.cdiv(N, DW_UNITS)
    split = precision == "tf32x3"
    gemm_prec = "tf32" if split else precision
    ks = SPLIT_K if SPLIT_K > 1 and F % SPLIT_K == 0 and not split else 1
    sizes = [ks * B * N, (3 if split else 1) * B * N, n_parts * N, N * F, N, n_prog, N]
    U, Y, DP, H, NSQ, TMAX, DV = torch.empty(sum(sizes), device=dev, dtype=torch.float32).split(sizes)
    H = H.view(N, F)
    with gemm_precision(W, gemm_prec):  # entered once for the GEMMs below
        if split:
            X3 = split3(X, 1)  # (B, 3, F): [hi, lo, hi]
            gemm_into(U.view(B, N), X3.view(B, 3 * F), split3(W, 2).view(N, 3 * F).t(), gemm_prec)
        elif ks == 1:
            gemm_into(U.view(B, N), X, W.t(), gemm_prec)
        else:  # part k = X[:, k-th slice] W[:, k-th slice]^T, one batched GEMM over strided views
            gemm_into(U.view(ks, B, N), X.unflatten(1, (ks, F // ks)).transpose(0, 1),
                      W.unflatten(1, (ks, F // ks)).permute(1, 2, 0), gemm_prec)
        _cublas_gate_kernel[(n_parts,)](U, Y, DP, B, N, 1.0 / temperature, B * N, ANTI=bool(anti_hebbian),
                                        KS=ks, SPLIT=split, BLOCK_R=GATE_ROWS, BLOCK_N=GATE_BN,
                                        num_warps=NUM_WARPS)
        if split:  # sum over the batch rows b and parts k of Y3[b, k]^T X3[b, k]
            gemm_into(H, Y.view(3 * B, N).t(), X3.view(3 * B, F), gemm_prec)
        else:
            gemm_into(H, Y.view(B, N).t(), X, gemm_prec)
        _cublas_dw_kernel[(n_prog,)](H, W, DP, NSQ, TMAX, DV, N, F, n_parts, lr if max_normalize else lr / B,
                                     W.stride(0), W.stride(1), MAXNORM=bool(max_normalize),
                                     ADAPTIVE=bool(adaptive_lr), BLOCK_M=DW_UNITS, BLOCK_F=DW_BF,
                                     BLOCK_P=DW_BP, num_warps=NUM_WARPS)
        if max_normalize:
            _apply_kernel[(triton.cdiv(N, BA_M), triton.cdiv(F, BA_N))](
                W, H, TMAX, NSQ, DV, N, F, n_prog, lr, W.stride(0), W.stride(1),
                ADAPTIVE=bool(adaptive_lr), DECAY=True, BLOCK_M=BA_M, BLOCK_N=BA_N, BLOCK_T=BT,
                num_warps=NUM_WARPS, num_stages=NUM_STAGES,
            )


def softwta_update(W: torch.Tensor, X: torch.Tensor, lr: float, temperature: float,
                   anti_hebbian: bool = True, adaptive_lr: bool = True,
                   max_normalize: bool = True, precision: str = "ieee") -> None:
    """In place on W (N x F, float32): one SoftHebb update; inputs are validated by bpalts.ops.
    Up to GRAPH_MAX_MACS multiply-adds, on a GPU, replayed from a cached CUDA graph."""
    if not replays_here(W, X, GRAPH_MAX_MACS):
        return _softwta_update(W, X, lr, temperature, anti_hebbian, adaptive_lr, max_normalize,
                               precision)
    key = (str(W.device), tuple(X.shape), X.dtype, float(lr), float(temperature), bool(anti_hebbian),
           bool(adaptive_lr), bool(max_normalize), precision, tensor_key(W),
           settings_key(sys.modules[__name__]))
    _graphs.run(key, (X,), (W,), lambda Xs: _softwta_update(
        W, Xs, lr, temperature, anti_hebbian, adaptive_lr, max_normalize, precision))


def _softwta_update(W: torch.Tensor, X: torch.Tensor, lr: float, temperature: float,
                    anti_hebbian: bool = True, adaptive_lr: bool = True,
                    max_normalize: bool = True, precision: str = "ieee") -> None:
    """:func:`softwta_update` itself (always launched here)."""
    B, F = X.shape
    N = W.shape[0]
    dev = W.device
    min_macs = {"ieee": CUBLAS_MIN_MACS, "tf32": CUBLAS_MIN_MACS_TF32,
                "tf32x3": CUBLAS_MIN_MACS_TF32X3}.get(precision, 0)
    if 0 < min_macs <= B * N * F:
        _softwta_update_cublas(W, X, lr, temperature, anti_hebbian, adaptive_lr, max_normalize,
                               "fp32" if precision == "ieee" else precision)
        return
    inv_tau = 1.0 / temperature
    if precision == "tf32x3":
        bm1, bn1, bk1, bm2, bn2, bk2 = BM1_TF32X3, BN1_TF32X3, BK1_TF32X3, BM2_TF32, BN2_TF32, BK2_TF32
    elif precision in TENSOR_CORE_PRECISIONS:
        bm1, bn1, bk1, bm2, bn2, bk2 = BM1_TF32, BN1_TF32, BK1_TF32, BM2_TF32, BN2_TF32, BK2_TF32
    else:
        bm1, bn1, bk1, bm2, bn2, bk2 = BM1, BN1, BK1, BM2, BN2, BK2
    NT = triton.cdiv(N, bn1)  # unit tiles of the forward GEMM = partials per row
    inline = NT <= STATS_INLINE_MAX_TILES
    grid2 = (triton.cdiv(N, bm2), triton.cdiv(F, bn2))
    n_tiles = grid2[0] * grid2[1]
    # One float32 workspace, one int32 (every segment is fully written before it is read).
    sizes = [B * N, B * NT, B * NT, N, B, B, n_tiles, N * F if max_normalize else 0]
    U, PMAX, PSUM, NSQ, RM, RINV, TMAX, DW = torch.empty(
        sum(sizes), device=dev, dtype=torch.float32).split(sizes)
    PARG, RWIN = torch.empty(B * NT + B, device=dev, dtype=torch.int32).split([B * NT, B])

    _forward_kernel[(triton.cdiv(B, bm1), NT)](
        X, W, U, PMAX, PSUM, PARG, NSQ, B, N, F, NT, inv_tau,
        X.stride(0), X.stride(1), W.stride(0), W.stride(1),
        PRECISION=precision, BLOCK_M=bm1, BLOCK_N=bn1, BLOCK_K=bk1, num_warps=NUM_WARPS, num_stages=NUM_STAGES,
    )
    nt_p2 = max(16, triton.next_power_of_2(NT))
    if not inline:
        _rowstats_kernel[(triton.cdiv(B, BR),)](
            PMAX, PSUM, PARG, RM, RINV, RWIN, B, NT, inv_tau,
            NT_P2=nt_p2, BLOCK=BR, num_warps=NUM_WARPS, num_stages=NUM_STAGES,
        )
    coef = lr if max_normalize else lr / B
    _update_kernel[grid2](
        U, X, W, DW, TMAX, NSQ, PMAX, PSUM, PARG, RM, RINV, RWIN,
        B, N, F, NT, inv_tau, coef,
        X.stride(0), X.stride(1), W.stride(0), W.stride(1),
        ANTI=bool(anti_hebbian), ADAPTIVE=bool(adaptive_lr), MAXNORM=bool(max_normalize),
        STATS_INLINE=inline, NT_P2=nt_p2, PRECISION=precision,
        BLOCK_M=bm2, BLOCK_N=bn2, BLOCK_K=bk2, num_warps=NUM_WARPS, num_stages=NUM_STAGES,
    )
    if max_normalize:
        _apply_kernel[(triton.cdiv(N, BA_M), triton.cdiv(F, BA_N))](
            W, DW, TMAX, NSQ, TMAX, N, F, n_tiles, lr, W.stride(0), W.stride(1),
            ADAPTIVE=bool(adaptive_lr), DECAY=False, BLOCK_M=BA_M, BLOCK_N=BA_N, BLOCK_T=BT,
            num_warps=NUM_WARPS, num_stages=NUM_STAGES,
        )
