r"""Triton kernels for :func:`bpalts.ops.hebbian_update` (math and rules: see that module).

``W += lr/B (G^T X - D W)`` with ``G = g(X W^T)`` and ``D = tril(G^T G)`` or ``G^T G``, in three
launches:

1. ``_matmul_kernel`` (gate epilogue): ``G = g(X W^T)``.
2. ``_matmul_kernel`` (lower-triangle mode): ``D = G^T G``; for the hierarchical rules only the
   tiles on or below the diagonal run their K loop, the rest store zeros.
3. ``_apply_kernel``: per (units, features) tile, ``acc = G^T X`` (K over the batch) then
   ``acc -= D W`` (K over units, stopping at the diagonal block when ``D`` is lower-triangular),
   and the epilogue writes ``W + lr/B * acc`` to a fresh buffer, copied back into ``W`` (tiles
   read rows of ``W`` that other tiles update, so the update cannot be written in place).

All strides are passed, so transposed and non-contiguous inputs need no copies. fp32 in and out;
``precision="ieee"`` (default) keeps fp32 products, ``"tf32"`` uses tensor cores.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

GATE_IDS = {"identity": 0, "tanh": 1}
PRECISIONS = ("ieee", "tf32")

# Tile sizes. The interpreter (CPU) wants few, large programs; the GPU wants enough tiles to fill
# the SMs. bench/gpu.py is where these get tuned.
BM, BN, BK = 64, 64, 32
NUM_WARPS = 4


@triton.jit
def _tanh(x):
    # tanh via exp, stable for large |x| (tl.math.tanh is not in every Triton release).
    e = tl.exp(-2.0 * tl.abs(x))
    t = (1.0 - e) / (1.0 + e)
    return tl.where(x >= 0, t, -t)


@triton.jit
def _matmul_kernel(
    A, Bm, Out, M, N, K,
    s_am, s_ak, s_bk, s_bn, s_om, s_on,
    GATE: tl.constexpr, LOWER: tl.constexpr, PRECISION: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
):
    """Out[M, N] = gate(A[M, K] @ B[K, N]); with LOWER, entries above the diagonal are 0."""
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
        acc += tl.dot(a, b, input_precision=PRECISION)
    if GATE == 1:
        acc = _tanh(acc)
    if LOWER:
        acc = tl.where(rm[:, None] >= rn[None, :], acc, 0.0)
    tl.store(Out + rm[:, None] * s_om + rn[None, :] * s_on, acc,
             mask=(rm[:, None] < M) & (rn[None, :] < N))


@triton.jit
def _apply_kernel(
    G, X, Dm, W, Wout, B, N, F, scale,
    s_gb, s_gn, s_xb, s_xf, s_dn, s_dm, s_wn, s_wf, s_on, s_of,
    LOWER: tl.constexpr, PRECISION: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
):
    """Wout[n, f] = W[n, f] + scale * (sum_b G[b, n] X[b, f] - sum_m D[n, m] W[m, f])."""
    pid_m = tl.program_id(0)  # over units
    pid_n = tl.program_id(1)  # over features
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
    # Decay term D W: K runs over units; a lower-triangular D stops after the diagonal block.
    m_end = N
    if LOWER:
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


def hebbian_update(W: torch.Tensor, X: torch.Tensor, gate: str, decay: str, lr: float,
                   precision: str = "ieee") -> None:
    """In place on W (N x F, float32): one update; inputs are validated by bpalts.ops."""
    B, F = X.shape
    N = W.shape[0]
    lower = decay == "tril"
    G = torch.empty((B, N), device=W.device, dtype=torch.float32)
    _matmul_kernel[(triton.cdiv(B, BM), triton.cdiv(N, BN))](
        X, W, G, B, N, F,
        X.stride(0), X.stride(1), W.stride(1), W.stride(0), G.stride(0), G.stride(1),
        GATE=GATE_IDS[gate], LOWER=False, PRECISION=precision,
        BLOCK_M=BM, BLOCK_N=BN, BLOCK_K=BK, num_warps=NUM_WARPS,
    )
    D = torch.empty((N, N), device=W.device, dtype=torch.float32)
    _matmul_kernel[(triton.cdiv(N, BM), triton.cdiv(N, BN))](
        G, G, D, N, N, B,
        G.stride(1), G.stride(0), G.stride(0), G.stride(1), D.stride(0), D.stride(1),
        GATE=0, LOWER=lower, PRECISION=precision,
        BLOCK_M=BM, BLOCK_N=BN, BLOCK_K=BK, num_warps=NUM_WARPS,
    )
    Wout = torch.empty((N, F), device=W.device, dtype=torch.float32)
    _apply_kernel[(triton.cdiv(N, BM), triton.cdiv(F, BN))](
        G, X, D, W, Wout, B, N, F, lr / B,
        G.stride(0), G.stride(1), X.stride(0), X.stride(1), D.stride(0), D.stride(1),
        W.stride(0), W.stride(1), Wout.stride(0), Wout.stride(1),
        LOWER=lower, PRECISION=precision,
        BLOCK_M=BM, BLOCK_N=BN, BLOCK_K=BK, num_warps=NUM_WARPS,
    )
    W.copy_(Wout)
