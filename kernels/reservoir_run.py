r"""Triton kernels for :func:`bpalts.ops.reservoir_run` (math: see that module).

``x_t = x_{t-1} + a (tanh(U_t + x_{t-1} W^T) - x_{t-1})`` with ``U = u W_in^T + b`` computed
for every step as one GEMM (torch) before the loop. fp32, dense ``W`` (any strides).

Three kernels. Two share one unit-block routine (``_unit_block``: ``BLOCK_N`` = 16 units for
every sample of a small batch; the dot products as a broadcast multiply-accumulate over
``BLOCK_K``-wide tiles of ``x_{t-1}`` — 2-D tiles for one sample, 3-D (batch, units, K) for
2..8 — then ``+ U_t``, tanh and the leak in the epilogue). The loop over ``N`` is unrolled
when it has at most ``MAX_UNROLL`` tiles, so the loads of a whole row slice are in flight at
once (N=2000, B=1: four 16 x 512 tiles, 185 registers, no spill on sm_90):

1. ``_persistent_kernel`` (small batches on CUDA, the default there for ``B <= 8``): ONE launch
   runs the whole time loop. The grid has at most one program per SM (so all programs are
   resident at once); program ``p`` owns unit blocks ``p, p + P, ...``. With B = 1, N <= 2048
   and one unit block per program (N=2000: 125 programs) the program loads its 16 x N slice of
   ``W`` into registers once (``RESIDENT``: 254 registers x 256 threads, no spill on sm_90) and
   a step reads only ``x_{t-1}`` (8 KB) from L2; otherwise it streams its rows from L2 at every
   step (the unit-block routine). After each step the
   programs meet at a barrier in global memory: a monotonically increasing int32 counter
   (zeroed per call). Each program: ``debug_barrier`` (bar.sync: every thread of the program
   has issued its stores of ``x_t``), one ``atomic_add(counter, 1, sem="release", scope="gpu")``,
   then spins on ``atomic_add(counter, 0, sem="acquire")`` until the counter reaches
   ``(t + 1) * P``, then ``debug_barrier`` again: the pattern of cooperative groups' grid sync
   and of Inductor's ``x_grid_barrier``. (A scalar atomic runs on one thread of the program;
   the PTX is ``atom.global.gpu.release.add`` then a ``ld.global.gpu.acquire`` spin, result
   broadcast through shared memory.) ``x_{t-1}`` is loaded with ``cache_modifier=".cg"`` (L2,
   never a stale L1 line). States ping-pong between two buffers, so one barrier per step is
   enough: a program writes buffer ``t % 2`` again only at step ``t + 2``, after every program
   has passed the barrier of step ``t + 1``, i.e. has finished reading it at step ``t``.
   A spin barrier deadlocks in the interpreter (programs run one after another), so there it
   runs only with one program (``n_programs=1``, which the tests use) and the default is the
   per-step path.
2. ``_gemv_step_kernel``: the same unit block, one launch per step (small batches under the
   interpreter, or ``persistent=False``).
3. ``_gemm_step_kernel`` (batched path, ``B > 8``): one launch per step, a ``tl.dot`` GEMM tile
   ``x_{t-1}[BM, :] @ W^T[:, BN]`` (``input_precision="ieee"``, or ``"tf32"`` / ``"tf32x3"``
   with ``precision=``) with ``+ U_t``, tanh and the leak fused in its epilogue, written
   straight into the output slot of a kept step.
4. ``gemm="cublas"`` (the batched path's alternative, ``BATCHED_GEMM``): each step's product
   ``P = x_{t-1} W^T`` by cuBLAS (``torch.mm`` into one buffer, at ``precision`` "fp32" or
   "tf32"), then ``_leak_tanh_kernel``: ``x_t = x_{t-1} + a (tanh(P + U_t) - x_{t-1})`` in one
   elementwise pass. Two launches per step instead of one, but on an H200 Triton's fp32
   (``ieee``) products ran at 0.58-0.88x cuBLAS at 4096 and this path's eager reference (cuBLAS
   plus four elementwise kernels per step) beat ``_gemm_step_kernel`` at B256 T28 (1.85 ms in a
   CUDA graph against 4.99), so the fused epilogue does not pay for the slower GEMM there.
   At ``precision="tf32x3"`` (cuBLAS has no 3xTF32) the product is one TF32 GEMM with K
   tripled, ``P = [x_hi, x_lo, x_hi] [W_hi, W_hi, W_lo]^T`` (``hi = round_tf32(v)``, ``lo =
   round_tf32(v - hi)``: both TF32-exact, so the tensor cores' products are exact and only the
   ``lo lo`` term is dropped): ``split3`` (``kernels/_split_tf32.py``) splits ``W`` once per call, and
   ``_leak_tanh_kernel`` writes each new state's split beside the state itself.

With ``GRAPH_MIN_STEPS`` set (28, the default: runs of at least that many steps), the per-step
paths (3 and 4) replay a CUDA graph of their step loop instead of launching every step from
Python; with ``PERSISTENT_GRAPHS`` (off: timed, it did not pay) the small-batch persistent kernel's plain calls
do the same. Both go through one :class:`bpalts.kernels._capture.PlainCallGraphs` (``_replayed``:
``U``, the leak and ``x0`` copied in, ``W`` read in place, the kept states cloned out; a
configuration is captured at its third call and replayed from then on).

Per-step paths store each state once: into the output when the step is kept, else into a
ping-pong buffer. The persistent kernel writes kept steps to the output in addition to its
buffers. Every path can be captured in a CUDA graph (``bench/gpu.py`` does): no host sync and,
for ``keep="all"`` / ``"last"``, no host-to-device copy.
"""
from __future__ import annotations

import sys
from contextlib import nullcontext
from functools import partial

import torch
import triton
import triton.language as tl

from bpalts._precision import TRITON_INPUT_PRECISION, gemm_into, gemm_precision
from bpalts.kernels._capture import PlainCallGraphs, settings_key, tensor_key
from bpalts.kernels._capture import graphs_apply as _graphs_apply  # tests stand in for it here
from bpalts.kernels._split_tf32 import split3, store_parts
from bpalts.kernels._math import tanh as _tanh

# Batches up to this size use the unit-block (broadcast) kernels; larger ones the tl.dot GEMM.
SMALL_BATCH_MAX = 8
# Elements of the broadcast accumulator (BATCH x BLOCK_N x BLOCK_K) per program.
ACC_ELEMS = 4096
ACC_ELEMS_ONE = 8192  # B = 1: 16 x 512 tiles; N=2000 unrolls into 4 (185 registers, no spill, sm_90)
BLOCK_N_SMALL = 16
MAX_UNROLL = 16  # unroll the loop over N up to this many BLOCK_K tiles
NUM_WARPS_SMALL = 8
# Persistent kernel, B = 1: W's 16 x N slice stays in registers when N <= this (16 x 2048 fp32
# with 8 warps: 254 registers per thread, no spill on sm_90; one program per SM).
RESIDENT_MAX_K = 2048
# GEMM tiles for the batched path.
BM, BN, BK = 64, 64, 32
# precision="tf32x3": bench/gpu_tiles.py on an H100 (torch 2.11, Triton 3.6, CUDA graph replay,
# median of 20), N2000 B256 T28: 1.48 ms with BK = 64 against 1.64 with the tiles above (BM=64
# BN=32: 1.51; the best of 8 configs).
BM_TF32X3, BN_TF32X3, BK_TF32X3 = 64, 64, 64
NUM_WARPS = 4

# The batched path's GEMM when the caller does not say. "cublas": on an H100 (bench/gpu.py, torch
# 2.11, Triton 3.6; plain call / CUDA graph) N2000 B256 T28 took 2.42 / 1.69 ms against 5.01 /
# 4.97 for "triton" (_gemm_step_kernel, fp32 products); at tf32 2.63 / 0.59 against 1.89 / 0.65.
BATCHED_GEMM = "cublas"
GEMMS = ("triton", "cublas")
# The same choice at precision="tf32x3". "cublas" runs 3xTF32 as ONE TF32 GEMM with K tripled:
# ``[x_hi, x_lo, x_hi] [W_hi, W_hi, W_lo]^T`` (W split once per call by kernels/_split_tf32.py, the state
# split by _leak_tanh_kernel as it writes it); "triton" splits both operands in every tile of
# _gemm_step_kernel (tl.dot's tf32x3: 1.48 ms in a CUDA graph on an H100 at N2000 B256 T28,
# bench/results/2026-11-28-h100). Timed (H200, 2026-11-28, eighteenth session,
# bench/results/2026-11-28-h200; plain call / CUDA graph): "cublas" 1.302 / 1.238 ms against
# "triton" 1.612 / 1.540 (fp32's cuBLAS path 1.725 / 1.664; the issue's target 1.5), but
# "cublas" was not float32-level: the states' error from a float64 run 1.3e-5 against 1.2e-7
# for the fp32 reference and for "triton" (the CPU emulation had predicted 7.6e-8: the tensor
# cores' accumulation loses more than operands rounded and products in float32). tf32x3
# promises float32-level accuracy, so "triton" (bench/gpu_decide.py TF32X3_ERR64_FACTOR). No
# layout fixes it: one cuBLAS TF32 GEMM per term was still 12x fp32's error on the GEMM alone
# (bench/gpu_tf32x3_forms.py, H200).
BATCHED_GEMM_TF32X3 = "triton"
EW_BLOCK = 1024  # units per program of _leak_tanh_kernel

# The per-step path replayed from a CUDA graph (its step loop captured once per configuration,
# at its third call, then one replay per call) for runs of at least GRAPH_MIN_STEPS steps; 0 =
# never. Why: on an H100 the cuBLAS path at N2000 B256 T28 spent 2.27 ms of host time per plain
# call (28 torch.mm calls and 28 Triton launches; bench/gpu.py --host) against 1.66 ms of device
# time. Timed (H100, 2026-11-28, plain / graph ms): 1.756 / 1.671 against 1.797 / 1.682 without
# (the host time had fallen since); set at the row's step count.
GRAPH_MIN_STEPS = 28
GRAPH_CACHE_MAX = 4  # configurations kept (each holds its input copies, its graph and a reference to W)
# Plain calls of the small-batch persistent kernel replayed from a cached CUDA graph (as the
# per-step path's above). Why: on an H100 at N2000 B1 T784 a plain call took 2.07 ms against
# 1.84 ms replayed from a graph (the target: 2.0). Off: timed (H100, 2026-11-28) the
# plain call took 2.083 ms with it against 2.032 without (graph 1.852 / 1.840).
PERSISTENT_GRAPHS = False
# Both switches' graphs, keyed by path and configuration (kernels/_capture.py PlainCallGraphs).
_graphs = PlainCallGraphs(GRAPH_CACHE_MAX)

KEEP_ALL, KEEP_LAST, KEEP_TABLE = 0, 1, 2
SYNCS = ("barrier", "ll")
# How the resident kernel's programs meet between steps when the caller does not say. "ll"
# (tagged states): on an H100 (bench/gpu.py; plain call / CUDA graph) N2000 B1 T784 took 2.04 /
# 1.84 ms against 2.11 / 2.11 with the grid barrier.
DEFAULT_SYNC = "ll"
# sync="ll": spins (one L2 round trip each, about a microsecond) after which a program waiting for
# one step stops waiting and reports failure instead of hanging.
LL_MAX_SPINS = 1 << 20


@triton.jit
def _leaky(x, h, a):
    """x + a (h - x), for a >= 0.5 as h - (1 - a) (h - x) (torch.lerp's form, the reference's):
    exact at a = 1 (x + (h - x) gave 0 for |x| >= 1e8, not h), no cancellation near 1."""
    d = h - x
    return tl.where(a < 0.5, x + a * d, h - (1.0 - a) * d)


@triton.jit
def _unit_block(
    W, s_wn, s_wk, src, U_t, s_ub, s_un, leak, dst, out_t, has_out, blk, B, N,
    BATCH: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, CG: tl.constexpr,
    K_TILES: tl.constexpr,
):
    """Units [blk*BLOCK_N, +BLOCK_N) of x_t for all B (<= BATCH) samples; src/dst/out_t are
    contiguous (B, N). With K_TILES > 0 the loop over N is unrolled (K_TILES = cdiv(N, BLOCK_K)),
    so the loads of a whole row slice can be in flight at once."""
    rn = blk * BLOCK_N + tl.arange(0, BLOCK_N)
    rb = tl.arange(0, BATCH)
    rk = tl.arange(0, BLOCK_K)
    mn = rn < N
    mb = rb < B
    if BATCH == 1:
        # One sample: 2-D tiles, x broadcast along the units.
        acc1 = tl.zeros((BLOCK_N, BLOCK_K), dtype=tl.float32)
        if K_TILES > 0:
            for kt in tl.static_range(K_TILES):
                acc1 += _chunk1(W, s_wn, s_wk, src, rn, rk, mn, kt * BLOCK_K, N, CG)
        else:
            for k0 in range(0, N, BLOCK_K):
                acc1 += _chunk1(W, s_wn, s_wk, src, rn, rk, mn, k0, N, CG)
        pre = tl.sum(acc1, axis=1)[None, :]  # (1, BLOCK_N)
    else:
        acc = tl.zeros((BATCH, BLOCK_N, BLOCK_K), dtype=tl.float32)
        if K_TILES > 0:
            for kt in tl.static_range(K_TILES):
                acc += _chunk(W, s_wn, s_wk, src, rn, rb, rk, mn, mb, kt * BLOCK_K, N, CG)
        else:
            for k0 in range(0, N, BLOCK_K):
                acc += _chunk(W, s_wn, s_wk, src, rn, rb, rk, mn, mb, k0, N, CG)
        pre = tl.sum(acc, axis=2)  # (BATCH, BLOCK_N)
    mo = mb[:, None] & mn[None, :]
    u = tl.load(U_t + rb[:, None] * s_ub + rn[None, :] * s_un, mask=mo, other=0.0)
    op = src + rb[:, None] * N + rn[None, :]
    if CG:
        xo = tl.load(op, mask=mo, other=0.0, cache_modifier=".cg")
    else:
        xo = tl.load(op, mask=mo, other=0.0)
    a = tl.load(leak + rn, mask=mn, other=1.0)
    h = _tanh(pre + u)
    xn = _leaky(xo, h, a[None, :])
    off = rb[:, None] * N + rn[None, :]
    tl.store(dst + off, xn, mask=mo)
    if has_out:
        tl.store(out_t + off, xn, mask=mo)


@triton.jit
def _chunk(W, s_wn, s_wk, src, rn, rb, rk, mn, mb, k0, N, CG: tl.constexpr):
    """x[:, k0:k0+BLOCK_K] (broadcast) * W[rn, k0:k0+BLOCK_K]: (BATCH, BLOCK_N, BLOCK_K).
    The column indices and masks of each operand are built separately (one use each), so the
    compiler materialises them in the operand's layout instead of converting through shared
    memory."""
    kw = k0 + rk
    w = tl.load(W + rn[:, None] * s_wn + kw[None, :] * s_wk,
                mask=mn[:, None] & (kw[None, :] < N), other=0.0)
    kx = k0 + rk
    xp = src + rb[:, None] * N + kx[None, :]
    xm = mb[:, None] & (kx[None, :] < N)
    if CG:
        x = tl.load(xp, mask=xm, other=0.0, cache_modifier=".cg")
    else:
        x = tl.load(xp, mask=xm, other=0.0)
    return x[:, None, :] * w[None, :, :]


@triton.jit
def _chunk1(W, s_wn, s_wk, src, rn, rk, mn, k0, N, CG: tl.constexpr):
    """x[0, k0:k0+BLOCK_K] (broadcast) * W[rn, k0:k0+BLOCK_K]: (BLOCK_N, BLOCK_K)."""
    kw = k0 + rk
    w = tl.load(W + rn[:, None] * s_wn + kw[None, :] * s_wk,
                mask=mn[:, None] & (kw[None, :] < N), other=0.0)
    kx = k0 + rk
    if CG:
        x = tl.load(src + kx, mask=kx < N, other=0.0, cache_modifier=".cg")
    else:
        x = tl.load(src + kx, mask=kx < N, other=0.0)
    return w * x[None, :]


@triton.jit
def _gemv_step_kernel(
    W, s_wn, s_wk, src, U_t, s_ub, s_un, leak, dst, B, N,
    BATCH: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, K_TILES: tl.constexpr,
):
    blk = tl.program_id(0)
    _unit_block(W, s_wn, s_wk, src, U_t, s_ub, s_un, leak, dst, dst, False, blk, B, N,
                BATCH, BLOCK_N, BLOCK_K, False, K_TILES)


@triton.jit
def _out_slot(slots, t, T_run, KEEP: tl.constexpr):
    """Output slot of step t, -1 if the step is not kept (KEEP: all, last, or the slots table)."""
    if KEEP == 0:
        slot = t
    elif KEEP == 1:
        slot = tl.where(t == T_run - 1, 0, -1)
    else:
        slot = tl.load(slots + t)
    return slot


@triton.jit
def _persistent_kernel(
    W, s_wn, s_wk, U, s_ut, s_ub, s_un, leak, buf, out, slots, counter, T_run, B, N, n_prog,
    KEEP: tl.constexpr, BATCH: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
    K_TILES: tl.constexpr, RESIDENT: tl.constexpr, K_PAD: tl.constexpr,
):
    """The whole time loop; buf (2, B, N) holds x0 in buf[1] on entry; counter is zeroed.
    RESIDENT (B = 1, grid = unit blocks): W's slice stays in registers (K_PAD = pow2 >= N)."""
    pid = tl.program_id(0)
    n_blocks = tl.cdiv(N, BLOCK_N)
    bn = B * N
    if RESIDENT:
        # One sample, one unit block per program (grid = unit blocks <= SMs): the program's
        # BLOCK_N x N slice of W is loaded into registers once and reused at every step, so a
        # step reads only x_{t-1} (N floats) from L2.
        rn = pid * BLOCK_N + tl.arange(0, BLOCK_N)
        rkf = tl.arange(0, K_PAD)
        mn = rn < N
        w_res = tl.load(W + rn[:, None] * s_wn + rkf[None, :] * s_wk,
                        mask=mn[:, None] & (rkf[None, :] < N), other=0.0)
        a_res = tl.load(leak + rn, mask=mn, other=1.0)
        # Carried in registers from step to step: the program's own units of x_{t-1} (it wrote
        # them itself; x0 from buf[1]) and U_t (loaded one step ahead, before the barrier, so
        # its latency hides behind the wait). A step's critical path is then the barrier, one
        # load of x_{t-1}, the dot products and the store.
        xo = tl.load(buf + bn + rn, mask=mn, other=0.0)
        u = tl.load(U + rn * s_un, mask=mn, other=0.0)
    for t in range(0, T_run):
        src = buf + ((t + 1) % 2) * bn
        dst = buf + (t % 2) * bn
        slot = _out_slot(slots, t, T_run, KEEP)
        has_out = slot >= 0
        out_t = out + tl.maximum(slot, 0) * bn
        if RESIDENT:
            kx = tl.arange(0, K_PAD)
            x = tl.load(src + kx, mask=kx < N, other=0.0, cache_modifier=".cg")
            pre = tl.sum(w_res * x[None, :], axis=1)
            xn = _leaky(xo, _tanh(pre + u), a_res)
            tl.store(dst + rn, xn, mask=mn)
            if has_out:
                tl.store(out_t + rn, xn, mask=mn)
            xo = xn
            u = tl.load(U + (t + 1) * s_ut + rn * s_un, mask=mn & (t + 1 < T_run), other=0.0)
        else:
            for blk in range(pid, n_blocks, n_prog):
                _unit_block(W, s_wn, s_wk, src, U + t * s_ut, s_ub, s_un, leak, dst, out_t,
                            has_out, blk, B, N, BATCH, BLOCK_N, BLOCK_K, True, K_TILES)
        if t + 1 < T_run:
            # Grid barrier: all of x_t is in global memory before anyone reads it at step t+1.
            tl.debug_barrier()
            tl.atomic_add(counter, 1, sem="release", scope="gpu")
            target = (t + 1) * n_prog
            seen = tl.atomic_add(counter, 0, sem="acquire", scope="gpu")
            while seen < target:
                seen = tl.atomic_add(counter, 0, sem="acquire", scope="gpu")
            tl.debug_barrier()


@triton.jit
def _ll_resident_kernel(
    W, s_wn, s_wk, U, s_ut, s_un, leak, buf, out, slots, status, T_run, N, max_spins,
    KEEP: tl.constexpr, BLOCK_N: tl.constexpr, K_PAD: tl.constexpr,
):
    """The resident persistent kernel (B = 1, one unit block per program, W's slice in
    registers) synchronised by *tagged states* instead of a grid barrier ("LL", NCCL's
    low-latency protocol): ``buf`` (2, N) int64 words, each ``tag << 32 | float bits`` of one
    unit's state, ``tag = t + 1`` for ``x_t`` (0 for ``x0``). A program waits for ``x_{t-1}``
    by re-loading the whole word vector (volatile: from L2, never L1) until every tag equals
    ``t``, and publishes its units of ``x_t`` with 64-bit atomic exchanges (value and tag arrive
    together). One round trip per step instead of the barrier's fence, atomic, spin and load.
    Ping-pong safety as in ``_persistent_kernel``: ``buf[t % 2]`` is rewritten at step ``t + 2``
    only by a program that has read every unit's ``x_{t+1}``, so every program has finished
    reading ``x_t``. A program that spins more than ``max_spins`` times for one step (not all
    programs resident: a launch error, not a slow step) stops waiting from then on and sets
    ``status[pid]``, which the host turns into an error, instead of hanging the GPU."""
    pid = tl.program_id(0)
    rn = pid * BLOCK_N + tl.arange(0, BLOCK_N)
    rk = tl.arange(0, K_PAD)
    mn = rn < N
    mk = rk < N
    w_res = tl.load(W + rn[:, None] * s_wn + rk[None, :] * s_wk,
                    mask=mn[:, None] & mk[None, :], other=0.0)
    a_res = tl.load(leak + rn, mask=mn, other=1.0)
    # Carried in registers, as in _persistent_kernel: the program's own units of x_{t-1} (x0:
    # buf[1]'s low words) and U_t, loaded one step ahead, before the wait.
    xo = tl.load(buf + N + rn, mask=mn, other=0).to(tl.int32).to(tl.float32, bitcast=True)
    u = tl.load(U + rn * s_un, mask=mn, other=0.0)
    failed = tl.zeros((1,), dtype=tl.int32)
    for t in range(0, T_run):
        src = buf + ((t + 1) % 2) * N
        dst = buf + (t % 2) * N
        # Wait for x_{t-1}: every word tagged t (masked lanes count as ready).
        words = tl.load(src + rk, mask=mk, other=0, volatile=True)
        bad = tl.sum(tl.where(mk & ((words >> 32).to(tl.int32) != t), 1, 0), axis=0)
        spins = 0
        while (bad > 0) & (tl.max(failed, axis=0) == 0):
            words = tl.load(src + rk, mask=mk, other=0, volatile=True)
            bad = tl.sum(tl.where(mk & ((words >> 32).to(tl.int32) != t), 1, 0), axis=0)
            spins += 1
            failed = tl.where(spins > max_spins, 1, failed)
        x = words.to(tl.int32).to(tl.float32, bitcast=True)  # the low 32 bits
        pre = tl.sum(w_res * x[None, :], axis=1)
        xn = _leaky(xo, _tanh(pre + u), a_res)
        tag = tl.full((BLOCK_N,), t + 1, dtype=tl.int64) << 32
        word = tag | (xn.to(tl.int32, bitcast=True).to(tl.int64) & 0xFFFFFFFF)
        tl.atomic_xchg(dst + rn, word, mask=mn, sem="relaxed", scope="gpu")
        slot = _out_slot(slots, t, T_run, KEEP)
        tl.store(out + tl.maximum(slot, 0) * N + rn, xn, mask=mn & (slot >= 0))
        xo = xn
        u = tl.load(U + (t + 1) * s_ut + rn * s_un, mask=mn & (t + 1 < T_run), other=0.0)
    tl.store(status + pid + tl.arange(0, 1), failed)


@triton.jit
def _gemm_step_kernel(
    X, W, s_wn, s_wk, U_t, s_ub, s_un, leak, Xn, B, N,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, PREC: tl.constexpr,
):
    """Xn = X + a (tanh(U_t + X W^T) - X); X, Xn contiguous (B, N); PREC: tl.dot's
    input_precision ("ieee", "tf32", "tf32x3")."""
    pid_m = tl.program_id(0)
    pid_n = tl.program_id(1)
    rm = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    rn = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    rk = tl.arange(0, BLOCK_K)
    mm = rm < B
    mn = rn < N
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    for k0 in range(0, N, BLOCK_K):
        kk = k0 + rk
        mk = kk < N
        x = tl.load(X + rm[:, None] * N + kk[None, :], mask=mm[:, None] & mk[None, :], other=0.0)
        wt = tl.load(W + kk[:, None] * s_wk + rn[None, :] * s_wn, mask=mk[:, None] & mn[None, :],
                     other=0.0)
        acc += tl.dot(x, wt, input_precision=PREC)
    mo = mm[:, None] & mn[None, :]
    u = tl.load(U_t + rm[:, None] * s_ub + rn[None, :] * s_un, mask=mo, other=0.0)
    xo = tl.load(X + rm[:, None] * N + rn[None, :], mask=mo, other=0.0)
    a = tl.load(leak + rn, mask=mn, other=1.0)
    h = _tanh(acc + u)
    tl.store(Xn + rm[:, None] * N + rn[None, :], _leaky(xo, h, a[None, :]), mask=mo)


@triton.jit
def _leak_tanh_kernel(P, U_t, s_ub, s_un, X, leak, Xn, X3, N, SPLIT: tl.constexpr,
                      BLOCK_N: tl.constexpr):
    """Row ``program_id(0)``, units ``program_id(1) * BLOCK_N ..``: ``Xn = X + a (tanh(P + U_t) -
    X)``; P, X, Xn contiguous (B, N), U_t strided. SPLIT (3xTF32): also ``X3[b] = [hi, lo, hi]``
    of the new state (X3 contiguous (B, 3, N)), the next step's GEMM operand."""
    b = tl.program_id(0)
    rn = tl.program_id(1) * BLOCK_N + tl.arange(0, BLOCK_N)
    mn = rn < N
    p = tl.load(P + b * N + rn, mask=mn, other=0.0)
    u = tl.load(U_t + b * s_ub + rn * s_un, mask=mn, other=0.0)
    x = tl.load(X + b * N + rn, mask=mn, other=0.0)
    a = tl.load(leak + rn, mask=mn, other=1.0)
    xn = _leaky(x, _tanh(p + u), a)
    tl.store(Xn + b * N + rn, xn, mask=mn)
    if SPLIT:
        store_parts(X3 + b * 3 * N + rn, xn, N, mn, 1)


def _launch_persistent(W, n_keep, mode, slots, T_run, B, N, n_programs, sync, resident, batch,
                       block_n, block_k, k_tiles, k_pad, U, a, x0):
    """One launch of the small-batch persistent kernel (``sync="barrier"``:
    ``_persistent_kernel``; ``"ll"``: ``_ll_resident_kernel``) on fresh buffers; returns
    ``(out, status)``, ``status`` nonzero where a program gave up waiting (the barrier kernel
    has none: a zero). No host sync, so a CUDA graph can record it."""
    dev = U.device
    out = torch.empty((n_keep, B, N), dtype=torch.float32, device=dev)
    # one zeroed int32 block: the barrier's counter, then (16 bytes on, so that both pointers
    # stay 16-byte aligned, as Triton specialises them) the programs' give-up flags ("ll")
    flags = torch.zeros((4 + n_programs,), dtype=torch.int32, device=dev)
    counter, status = flags[:1], flags[4:]
    slots = counter if slots is None else slots  # unread without a table
    s_ut, s_ub, s_un = U.stride()
    if sync == "ll":
        buf = torch.zeros((2, N), dtype=torch.int64, device=dev)
        if x0 is not None:  # x0 tagged 0: its float bits, zero-extended
            buf[1].copy_(x0.reshape(N).view(torch.int32).to(torch.int64) & 0xFFFFFFFF)
        _ll_resident_kernel[(n_programs,)](
            W, W.stride(0), W.stride(1), U, s_ut, s_un, a, buf, out, slots, status, T_run, N,
            LL_MAX_SPINS, KEEP=mode, BLOCK_N=block_n, K_PAD=k_pad, num_warps=NUM_WARPS_SMALL,
        )
        return out, status
    buf = torch.empty((2, B, N), dtype=torch.float32, device=dev)
    if x0 is None:
        buf[1].zero_()
    else:
        buf[1].copy_(x0)
    _persistent_kernel[(n_programs,)](
        W, W.stride(0), W.stride(1), U, s_ut, s_ub, s_un, a, buf, out, slots, counter,
        T_run, B, N, n_programs,
        KEEP=mode, BATCH=batch, BLOCK_N=block_n, BLOCK_K=block_k, K_TILES=k_tiles,
        RESIDENT=bool(resident), K_PAD=k_pad if resident else 1,
        num_warps=NUM_WARPS_SMALL,
    )
    return out, status


def _check_persistent_status(status, sync):
    """Raise if a program of the "ll" kernel gave up waiting (one host sync; none while the
    caller captures a CUDA graph)."""
    if sync != "ll":
        return
    capturing = status.is_cuda and torch.cuda.is_current_stream_capturing()
    if not capturing and bool(status.any()):
        raise RuntimeError("reservoir_run(sync='ll'): a program gave up waiting for the others' "
                           "states (were all programs resident? n_programs must not exceed the SMs)")


def _interpreted() -> bool:
    import os

    return os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")


def _small_blocks(B: int, N: int) -> tuple[int, int, int, int]:
    """(BATCH, BLOCK_N, BLOCK_K, K_TILES) of the unit-block kernels. BATCH = 1 takes 2-D tiles;
    K_TILES = 0 (a runtime loop) when unrolling would exceed MAX_UNROLL tiles."""
    batch = triton.next_power_of_2(B)
    elems = ACC_ELEMS_ONE if batch == 1 else ACC_ELEMS
    block_k = max(16, elems // (batch * BLOCK_N_SMALL))
    k_tiles = triton.cdiv(N, block_k)
    if k_tiles > MAX_UNROLL:
        k_tiles = 0
    return batch, BLOCK_N_SMALL, block_k, k_tiles


def _step_loop(W, U, a, x0, out, *, steps, T_run, gemm, precision, small) -> None:
    """The per-step launches: ``T_run`` steps from ``x0`` (zeros if None), the kept ``steps``
    written to ``out`` in order. No host sync, so it can be captured in a CUDA graph."""
    B, N = out.shape[1], out.shape[2]
    dev = out.device
    _, s_ub, s_un = U.stride()
    slot = {s: i for i, s in enumerate(steps)}
    *bufs, P = torch.empty((3, B, N), dtype=torch.float32, device=dev).unbind(0)  # 2 states, product
    if x0 is None:
        x = bufs[1]
        x.zero_()
    else:
        x = x0
    split = gemm == "cublas" and precision == "tf32x3"  # 3xTF32 as one K-concatenated TF32 GEMM
    gemm_prec = "tf32" if split else precision
    if gemm == "cublas":
        WT = W.t()
        grid = (B, triton.cdiv(N, EW_BLOCK))
        X3 = P  # unread without the split
        if split:  # P = [x_hi, x_lo, x_hi] [W_hi, W_hi, W_lo]^T
            WT = split3(W, 2).view(N, 3 * N).t()
            if x0 is None:
                X3 = torch.zeros((B, 3, N), dtype=torch.float32, device=dev)
            else:
                X3 = split3(x0, 1)
            x3 = X3.view(B, 3 * N)
    elif small:
        batch, block_n, block_k, k_tiles = _small_blocks(B, N)
        grid = (triton.cdiv(N, block_n),)
    else:
        bm, bn, bk = (BM_TF32X3, BN_TF32X3, BK_TF32X3) if precision == "tf32x3" else (BM, BN, BK)
        grid = (triton.cdiv(B, bm), triton.cdiv(N, bn))
    with gemm_precision(W, gemm_prec) if gemm == "cublas" else nullcontext():
        for t in range(T_run):
            i = slot.get(t)
            dst = out[i] if i is not None else bufs[t & 1]
            U_t = U[t]
            if gemm == "cublas":
                gemm_into(P, x3 if split else x, WT, gemm_prec)
                _leak_tanh_kernel[grid](P, U_t, s_ub, s_un, x, a, dst, X3, N, SPLIT=split,
                                        BLOCK_N=EW_BLOCK, num_warps=4)
            elif small:
                _gemv_step_kernel[grid](W, W.stride(0), W.stride(1), x, U_t, s_ub, s_un, a, dst, B, N,
                                        BATCH=batch, BLOCK_N=block_n, BLOCK_K=block_k,
                                        K_TILES=k_tiles, num_warps=NUM_WARPS_SMALL)
            else:
                _gemm_step_kernel[grid](x, W, W.stride(0), W.stride(1), U_t, s_ub, s_un, a, dst, B, N,
                                        BLOCK_M=bm, BLOCK_N=bn, BLOCK_K=bk,
                                        PREC=TRITON_INPUT_PRECISION[precision], num_warps=NUM_WARPS)
            x = dst


def _replayed(tag, key, W, U, a, x0, T_run, fn) -> torch.Tensor:
    """``fn(U, a, x0)`` (returning a fresh result) through the module's :class:`PlainCallGraphs`
    (``_graphs``), which replays it from a CUDA graph from the third call with this ``key`` on:
    the first ``T_run`` steps of ``U`` (its one step when the input is held: time stride 0),
    the leak and ``x0`` are copied in, ``W`` is read in place (address, shape and strides in
    the key). Returns what ``fn`` returned; on a replay those tensors live in the graph and are
    rewritten by the next replay, so the caller clones what it keeps."""
    held_u = U.stride(0) == 0 and T_run > 1  # one projected input held for every step
    key = (tag, str(W.device), tuple(U[:T_run].shape), held_u, x0 is None, tensor_key(W),
           settings_key(sys.modules[__name__])) + key
    inputs = (U[0] if held_u else U[:T_run], a) + ((x0,) if x0 is not None else ())

    def call(u, a_, x0_=None):
        return fn(u.unsqueeze(0).expand(T_run, *u.shape) if held_u else u, a_, x0_)

    return _graphs.run(key, inputs, (W,), call)


def reservoir_run(W, W_in, inputs, leak, bias=None, state0=None, *, keep="all",
                  persistent: bool | None = None, n_programs: int | None = None,
                  resident: bool | None = None, sync: str | None = None,
                  precision: str = "fp32", gemm: str | None = None) -> torch.Tensor:
    """Triton backend of :func:`bpalts.ops.reservoir_run` (inputs already validated).

    ``persistent``: None picks the persistent kernel on CUDA for batches up to
    ``SMALL_BATCH_MAX`` (else per-step launches); True forces it (under the interpreter only
    with ``n_programs=1``), False forbids it. ``n_programs``: grid of the persistent kernel
    (default: min(#SMs, unit blocks)). ``resident``: keep each program's slice of ``W`` in
    registers across steps (persistent kernel, B = 1, one unit block per program, N <=
    RESIDENT_MAX_K); None: whenever that applies. ``sync``: how the resident kernel's programs
    meet between steps: ``"barrier"`` (a grid barrier, ``_persistent_kernel``) or ``"ll"``
    (tagged states, ``_ll_resident_kernel``; needs ``resident``); None: ``DEFAULT_SYNC`` where
    the resident kernel runs, else the barrier. ``precision`` (checked by
    the op): the batched path's ``tl.dot`` input precision and the input projection's operand
    rounding (``"tf32"``); the small-batch kernels compute ``x_{t-1} W^T`` in fp32.
    ``gemm``: the per-step product ``x_{t-1} W^T``: ``"triton"`` (``tl.dot`` with the tanh and
    leak in its epilogue; ``_gemv_step_kernel`` for batches up to ``SMALL_BATCH_MAX``) or
    ``"cublas"`` (``torch.mm``, then ``_leak_tanh_kernel``; any batch and precision, "tf32x3"
    as one TF32 GEMM of split operands; not with the persistent kernel). None: for batches
    above ``SMALL_BATCH_MAX`` ``BATCHED_GEMM`` (``BATCHED_GEMM_TF32X3`` at "tf32x3"), else
    ``"triton"``.
    """
    from bpalts.ops.reservoir_run import _input_projection, _keep_plan

    T, B, _ = inputs.shape
    N = W.shape[0]
    dev = inputs.device
    steps, order = _keep_plan(keep, T, dev)
    T_run = steps[-1] + 1
    U = _input_projection(W_in, inputs, bias, precision)  # (T, B, N), time stride 0 for a static input
    s_ut, s_ub, s_un = U.stride()
    if isinstance(leak, torch.Tensor):
        a = leak.contiguous()
    else:
        a = torch.full((N,), float(leak), dtype=torch.float32, device=dev)
    x0 = state0.contiguous() if state0 is not None else None
    interp = _interpreted()
    small = B <= SMALL_BATCH_MAX
    if gemm is not None and gemm not in GEMMS:
        raise ValueError(f"gemm must be one of {GEMMS}, got {gemm!r}")
    if gemm == "cublas":
        if persistent:
            raise ValueError("gemm='cublas' runs one step per launch: it cannot be persistent")
        persistent = False
    elif gemm is None:
        gemm = "triton" if small else BATCHED_GEMM_TF32X3 if precision == "tf32x3" else BATCHED_GEMM
    if persistent is None:
        persistent = small and dev.type == "cuda" and not interp
    if persistent:
        if not small:
            raise ValueError(f"persistent kernel supports batches up to {SMALL_BATCH_MAX}, got {B}")
        n_blocks = triton.cdiv(N, BLOCK_N_SMALL)
        if n_programs is None:
            if interp:
                n_programs = 1
            else:
                sms = torch.cuda.get_device_properties(dev).multi_processor_count
                n_programs = min(sms, n_blocks)
        n_programs = int(n_programs)
        if n_programs < 1:
            raise ValueError(f"n_programs must be >= 1, got {n_programs}")
        if interp and n_programs != 1:
            raise ValueError("the persistent kernel's spin barrier deadlocks under TRITON_INTERPRET "
                             "(programs run sequentially): use n_programs=1 there")
        if dev.type == "cuda" and n_programs > torch.cuda.get_device_properties(dev).multi_processor_count:
            raise ValueError("n_programs must not exceed the number of SMs (all programs must be resident)")
        if len(steps) == T_run:
            mode, slots = KEEP_ALL, None
        elif len(steps) == 1:
            mode, slots = KEEP_LAST, None
        else:
            mode = KEEP_TABLE
            tab = torch.full((T_run,), -1, dtype=torch.int32)
            tab[torch.tensor(steps)] = torch.arange(len(steps), dtype=torch.int32)
            slots = tab.to(dev)
        batch, block_n, block_k, k_tiles = _small_blocks(B, N)
        k_pad = max(16, triton.next_power_of_2(N))
        can_reside = B == 1 and n_programs == n_blocks and k_pad <= RESIDENT_MAX_K
        if resident is None:
            resident = can_reside
        elif resident and not can_reside:
            raise ValueError("resident W needs batch 1, one unit block per program "
                             f"(n_programs == {n_blocks}) and N <= {RESIDENT_MAX_K}")
        if sync is None:
            sync = DEFAULT_SYNC if resident else "barrier"
        if sync not in SYNCS:
            raise ValueError(f"sync must be one of {SYNCS}, got {sync!r}")
        if sync == "ll" and not resident:
            raise ValueError("sync='ll' needs the resident kernel (batch 1, one unit block per "
                             f"program: n_programs == {n_blocks}, N <= {RESIDENT_MAX_K})")
        launch = partial(_launch_persistent, W, len(steps), mode, slots, T_run, B, N, n_programs,
                         sync, resident, batch, block_n, block_k, k_tiles, k_pad)
        # Not with a keep table: the graph would record this call's slots table by address,
        # which the cache entry does not hold (a later replay would read freed memory).
        if PERSISTENT_GRAPHS and mode != KEEP_TABLE and _graphs_apply(dev):
            # T_run: the launch runs T_run steps (U holds T): keep=[s] is KEEP_LAST at any s
            out, status = _replayed("persistent", (len(steps), mode, T_run, n_programs, sync,
                                                   bool(resident)),
                                    W, U, a, x0, T, launch)
            out = out.clone()
        else:
            out, status = launch(U, a, x0)
        _check_persistent_status(status, sync)
        return out if order is None else out.index_select(0, order)

    # Per-step launches.
    run_kw = dict(steps=steps, T_run=T_run, gemm=gemm, precision=precision, small=small)

    def per_step(U_, a_, x0_=None):
        out = torch.empty((len(steps), B, N), dtype=torch.float32, device=dev)
        _step_loop(W, U_, a_, x0_, out, **run_kw)
        return out

    if 0 < GRAPH_MIN_STEPS <= T_run and _graphs_apply(dev):
        out = _replayed("steps", (tuple(steps), gemm, precision, small), W, U, a, x0, T_run,
                        per_step).clone()
    else:
        out = per_step(U, a, x0)
    return out if order is None else out.index_select(0, order)
