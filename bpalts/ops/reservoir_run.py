r"""Run a leaky echo-state reservoir over a sequence (row vectors, batch-major states).

For inputs ``u_t`` (B x D), ``t = 0 .. T-1``, recurrent weights ``W`` (N x N, dense or sparse
CSR), input weights ``W_in`` (N x D), bias ``b`` (N) and leak ``a`` (a scalar or one per unit,
in (0, 1]):

.. math::

    x_t = (1 - a) \odot x_{t-1} + a \odot \tanh\bigl(u_t W_{in}^\top + x_{t-1} W^\top + b\bigr),
    \qquad x_{-1} = \text{state0}\ (\text{zeros by default}).

The op returns the states ``x_t`` at the kept steps, shape (T_kept, B, N). Jaeger, "The echo
state approach to analysing and training recurrent neural networks", GMD Report 148 (2001);
leaky-integrator units: Jaeger, Lukosevicius, Popovici, Siewert, "Optimization and applications
of echo state networks with leaky-integrator neurons", Neural Networks 20(3) 2007.

:func:`image_sequence` turns MNIST images into the sequences used by the reservoir learners:
``static`` (the whole image held for ``steps`` steps), ``rows`` (28 steps of 28 pixels) or
``pixels`` (784 steps of 1 pixel).

Backends
--------
``reference``: plain PyTorch (the specification, float32 and float64, and the eager baseline of
the benchmarks): the input projection of every step as one GEMM first, then a loop of
``addmm`` + ``tanh`` + ``lerp``; a sparse CSR ``W`` steps with ``torch.sparse.mm``.

``cpp``: the input projection as one GEMM in PyTorch (MKL), then (``csrc/reservoir_run.cpp``):

* dense ``W``, batch <= 10 (``CPP_LOOP_MAX_BATCH``): the whole time loop in C++, one OpenMP
  region, one barrier per step. Units go in groups of 8 rows of the row-major ``W`` where the
  extension has AVX-512, else 4 (sequential streams, each loaded ``x`` vector reused for the
  group, one FMA chain per row and sample, lanes summed as a tree), 64 units per work item
  with ``+ U_t``, a vectorised tanh and the leak fused in. At B = 1 a step streams the 16 MB
  of a 2000 x 2000 float32 ``W`` (memory bound); each thread walks its rows forward and
  backward on alternate steps, so the rows still in its caches are read first.
* dense ``W``, batch 1, ``W`` of at least ``CPP_TWO_STEP_MIN_BYTES`` (6 MB): every entry of
  ``W`` read once per two steps. ``W[i, j]`` serves step t (times ``x_{t-1}[j]``) and step t+1
  (times ``x_t[j]``) from one load once ``x_t[j]`` is final. Rows go in chunks of
  ``CPP_TWO_STEP_CHUNK`` (threads wait on per-chunk counters, not barriers), passes alternate
  direction, and a pass reads the block-lower (forward) or block-upper (backward) triangle of
  ``W`` for both steps; the forward pass also reads the diagonal blocks for both steps (the
  second time from its own cache). Step t+1's partial sums are carried to the next pass: half
  of ``W`` streamed per step (the math is in ``run_dense_two_step``). Each chunk's rows are
  split among the threads in proportion to their measured speeds, updated every 16 steps (a
  shared VM's vCPUs can differ by 15%); the results do not depend on it.
* dense ``W``, larger batches: each step's GEMM in MKL (``torch.addmm``), tanh and leak fused in
  one C++ pass.
* CSR ``W`` (any batch): the whole loop in C++, rows in parallel, 2-byte column indices when
  N <= 65536; B = 1: gathered dot products (AVX2 gathers, 16 nonzeros per iteration, where the
  extension is built for x86 with AVX2: the default ``-march=native`` build there); B > 1: the
  state kept transposed (units x batch), so every nonzero is one contiguous axpy over the batch.

float32 and float64 (double uses ``std::tanh``).

``triton``: ``kernels/reservoir_run.py``: for batches up to 8 on CUDA a persistent kernel that
runs the whole time loop in one launch (programs own slices of units and, for B = 1, wait for
each other's tagged states of the previous step: ``DEFAULT_SYNC = "ll"``; otherwise a
global-memory barrier per step); otherwise, and under ``TRITON_INTERPRET=1``, one launch per
step: for batches above 8 each step's GEMM by cuBLAS and one fused tanh + leak kernel
(``BATCHED_GEMM = "cublas"``: 2-3x faster than the fused Triton GEMM step on an H100 at
N2000 B256; at ``precision="tf32x3"`` the Triton step, ``BATCHED_GEMM_TF32X3``: its
``"cublas"`` form, one TF32 GEMM of the 3xTF32-split operands, took 1.24 ms against 1.54 on an
H200 but was not float32-level, 1.3e-5 from float64 against fp32's 1.2e-7), for smaller ones a fused GEMV + tanh + leak. float32, dense ``W``; CUDA tensors, or CPU
tensors under the interpreter.
"""
from __future__ import annotations

import numbers
from collections.abc import Mapping, Sequence, Set

import torch

from bpalts._backend import cpp_module, resolve_backend
from bpalts._checks import (FLOAT32_ONLY, FLOAT32_OR_64, check_choice, check_dense, check_finite, check_int,
                            check_tensor)
from bpalts._checks import one_finite_sync
from bpalts._precision import check_precision, operand_rounder

KEEP_MODES = ("all", "last")
SEQUENCE_MODES = ("static", "rows", "pixels")


# ---------------------------------------------------------------------------------------------
# Helpers shared by the backends.
# ---------------------------------------------------------------------------------------------

def _input_projection(W_in: torch.Tensor, inputs: torch.Tensor, bias: torch.Tensor | None,
                      precision: str = "fp32") -> torch.Tensor:
    """``U[t] = u_t W_in^T + b`` for every step as one GEMM, (T, B, N); at ``precision="tf32"``
    the GEMM's operands are rounded to TF32 (every backend computes this GEMM in torch).

    A sequence that holds one input for every step (time stride 0, e.g. ``image_sequence(...,
    "static")``) is projected once and expanded (a view, stride 0 along time).
    """
    T, B, D = inputs.shape
    N = W_in.shape[0]
    rnd = operand_rounder(precision)
    WT = rnd(W_in).T
    if T > 1 and inputs.stride(0) == 0:
        u0 = rnd(inputs[0])
        U0 = torch.addmm(bias, u0, WT) if bias is not None else u0 @ WT
        return U0.unsqueeze(0).expand(T, B, N)
    flat = rnd(inputs.reshape(T * B, D))
    U = torch.addmm(bias, flat, WT) if bias is not None else flat @ WT
    return U.view(T, B, N)


def _integer_dtype(dtype: torch.dtype) -> bool:
    """An integer dtype: not floating point, complex or bool (a step index's)."""
    return not (dtype.is_floating_point or dtype.is_complex or dtype == torch.bool)


def _keep_plan(keep, T: int, device) -> tuple[list[int], torch.Tensor | None]:
    """(sorted unique steps to store, index into them giving the requested order or None)."""
    if isinstance(keep, str):
        check_choice("keep", keep, KEEP_MODES)
        return (list(range(T)) if keep == "all" else [T - 1]), None
    if isinstance(keep, torch.Tensor):
        if not _integer_dtype(keep.dtype):
            raise TypeError(f"keep must hold integer step indices, got a tensor of dtype {keep.dtype}")
        if keep.dim() > 1:
            raise ValueError(f"keep must be a 1-D sequence of step indices, got shape {tuple(keep.shape)}")
        steps = [int(v) for v in keep.reshape(-1).tolist()]
    elif isinstance(keep, Sequence) or hasattr(keep, "__iter__"):
        steps = []
        for v in keep:
            if isinstance(v, bool) or not isinstance(v, int):
                if isinstance(v, torch.Tensor) and v.numel() == 1 and _integer_dtype(v.dtype):
                    v = int(v)
                else:
                    try:
                        import numpy as np

                        if isinstance(v, np.integer):
                            v = int(v)
                        else:
                            raise TypeError
                    except (ImportError, TypeError):
                        raise TypeError(
                            f"keep must hold integer step indices, got {type(v).__name__} {v!r}"
                        ) from None
            steps.append(v)
    else:
        raise TypeError(
            f"keep must be 'all', 'last' or a sequence of step indices, got {type(keep).__name__}"
        )
    if not steps:
        raise ValueError("keep is an empty sequence of step indices: keep at least one step")
    norm = []
    for s in steps:
        if not -T <= s < T:
            raise ValueError(f"keep holds step {s}, outside the sequence of T={T} steps ([-{T}, {T}))")
        norm.append(s % T)
    uniq = sorted(set(norm))
    if norm == uniq:
        return uniq, None
    pos = {s: i for i, s in enumerate(uniq)}
    return uniq, torch.tensor([pos[s] for s in norm], dtype=torch.long, device=device)


def _check_csr(W: torch.Tensor) -> None:
    """crow/col arrays of a CSR ``W`` are well formed: rows sorted, columns in range and
    strictly increasing within each row (so no duplicates)."""
    N = W.shape[0]
    crow = W.crow_indices()
    col = W.col_indices()
    nnz = col.numel()
    if crow.dim() != 1 or crow.numel() != N + 1:
        raise ValueError(f"W (sparse CSR) must have N+1={N + 1} crow_indices, got {crow.numel()}")
    if int(crow[0]) != 0 or int(crow[-1]) != nnz:
        raise ValueError(
            f"W (sparse CSR) crow_indices must start at 0 and end at nnz={nnz}, "
            f"got {int(crow[0])} and {int(crow[-1])}"
        )
    if bool((crow[1:] < crow[:-1]).any()):
        raise ValueError("W (sparse CSR) crow_indices must be non-decreasing")
    if nnz == 0:
        return
    if bool((col < 0).any()) or bool((col >= W.shape[1]).any()):
        raise ValueError(
            f"W (sparse CSR) has column indices out of range [0, {W.shape[1]}): "
            f"min {int(col.min())}, max {int(col.max())}"
        )
    # Within a row, columns strictly increase: a step down or a repeat is only allowed where a
    # new row starts.
    diff_ok = col[1:] > col[:-1]
    row_start = torch.zeros(nnz, dtype=torch.bool, device=col.device)
    starts = crow[1:-1]
    starts = starts[(starts > 0) & (starts < nnz)]
    row_start[starts] = True
    if bool((~diff_ok & ~row_start[1:]).any()):
        raise ValueError(
            "W (sparse CSR) column indices must be sorted and unique within each row "
            "(call .to_sparse_coo().coalesce().to_sparse_csr() to fix)"
        )


def _check_inputs(W, W_in, inputs, leak, bias, state0, dtypes):
    if not isinstance(W, torch.Tensor):
        raise TypeError(f"W must be a torch.Tensor (dense or sparse CSR), got {type(W).__name__}")
    sparse = W.layout == torch.sparse_csr
    if W.layout not in (torch.strided, torch.sparse_csr):
        raise TypeError(f"W must be a dense (strided) or sparse CSR tensor, got layout {W.layout}")
    if sparse:
        if W.dim() != 2:
            raise ValueError(f"W must be 2-D (units, units), got shape {tuple(W.shape)}")
        if W.dtype not in dtypes:
            raise TypeError(
                f"W must have dtype {' or '.join(str(d).replace('torch.', '') for d in dtypes)}, got {W.dtype}"
            )
        if W.shape[0] == 0:
            raise ValueError(f"W has an empty units dimension (shape {tuple(W.shape)})")
    else:
        check_tensor("W", W, ("units", "units"), dtypes)
    if W.shape[0] != W.shape[1]:
        raise ValueError(f"W must be square (units x units), got shape {tuple(W.shape)}")
    N = W.shape[0]
    check_tensor("W_in", W_in, ("units", "inputs"), dtypes)
    if not isinstance(inputs, torch.Tensor):
        raise TypeError(f"inputs must be a torch.Tensor, got {type(inputs).__name__}")
    if inputs.dim() != 3:
        raise ValueError(f"inputs must be 3-D (time, batch, inputs), got shape {tuple(inputs.shape)}")
    if inputs.shape[0] == 0:
        raise ValueError(f"inputs is a sequence of length 0 (shape {tuple(inputs.shape)}); need T >= 1")
    check_tensor("inputs", inputs, ("time", "batch", "inputs"), dtypes)
    for name, t in (("W_in", W_in), ("inputs", inputs)):
        if t.device != W.device:
            raise ValueError(f"{name} is on {t.device} but W is on {W.device}; all tensors must be on the same device")
        if t.dtype != W.dtype:
            raise TypeError(f"{name} has dtype {t.dtype} but W has {W.dtype}; they must match")
    if W_in.shape[0] != N:
        raise ValueError(f"W_in has {W_in.shape[0]} units but W has {N} (W_in is units x inputs = {tuple(W_in.shape)})")
    if inputs.shape[2] != W_in.shape[1]:
        raise ValueError(
            f"inputs has {inputs.shape[2]} input features but W_in expects {W_in.shape[1]} "
            f"(inputs is time x batch x inputs = {tuple(inputs.shape)}, W_in is {tuple(W_in.shape)})"
        )
    B = inputs.shape[1]
    if bias is not None:
        check_tensor("bias", bias, ("units",), dtypes)
        if bias.shape[0] != N:
            raise ValueError(f"bias has {bias.shape[0]} entries but W has {N} units")
    if state0 is not None:
        check_tensor("state0", state0, ("batch", "units"), dtypes)
        if tuple(state0.shape) != (B, N):
            raise ValueError(f"state0 must have shape (batch, units) = ({B}, {N}), got {tuple(state0.shape)}")
    for name, t in (("bias", bias), ("state0", state0)):
        if t is None:
            continue
        if t.device != W.device:
            raise ValueError(f"{name} is on {t.device} but W is on {W.device}; all tensors must be on the same device")
        if t.dtype != W.dtype:
            raise TypeError(f"{name} has dtype {t.dtype} but W has {W.dtype}; they must match")
    # leak: a number or a tensor of one value per unit (or a single value), all in (0, 1].
    if isinstance(leak, torch.Tensor):
        if leak.dtype == torch.bool:
            raise TypeError("leak must be a real number in (0, 1] or a float tensor of one per unit, got a bool tensor")
        if leak.dim() == 0 or (leak.dim() == 1 and leak.numel() == 1):
            leak = leak.reshape(()).item()
        else:
            check_tensor("leak", leak, ("units",), dtypes)
            if leak.shape[0] != N:
                raise ValueError(f"leak has {leak.shape[0]} entries but W has {N} units (one per unit, or a scalar)")
            if leak.device != W.device:
                raise ValueError(f"leak is on {leak.device} but W is on {W.device}; all tensors must be on the same device")
            if leak.dtype != W.dtype:
                raise TypeError(f"leak has dtype {leak.dtype} but W has {W.dtype}; they must match")
            if not bool(((leak > 0) & (leak <= 1)).all()):
                raise ValueError(
                    f"leak must lie in (0, 1] for every unit, got min {float(leak.min())}, max {float(leak.max())}"
                )
            return sparse, leak
    if isinstance(leak, bool) or not isinstance(leak, numbers.Real):
        raise TypeError(f"leak must be a real number in (0, 1] or a tensor of one per unit, got {type(leak).__name__}")
    leak = float(leak)
    if not 0.0 < leak <= 1.0:  # also rejects NaN
        raise ValueError(f"leak must lie in (0, 1], got {leak}")
    return sparse, leak


# ---------------------------------------------------------------------------------------------
# Reference.
# ---------------------------------------------------------------------------------------------

def reservoir_run_reference(
    W: torch.Tensor,
    W_in: torch.Tensor,
    inputs: torch.Tensor,
    leak: float | torch.Tensor = 1.0,
    bias: torch.Tensor | None = None,
    state0: torch.Tensor | None = None,
    *,
    keep="all",
    precision: str = "fp32",
) -> torch.Tensor:
    """The specification of :func:`reservoir_run` (plain PyTorch, no input checks): the input
    projection of all steps as one GEMM, then the recurrence step by step. ``precision="tf32"``
    rounds both GEMMs' operands to TF32 (``x_{t-1}`` at every step); ``"tf32x3"`` is fp32 here."""
    T, B, _ = inputs.shape
    N = W.shape[0]
    steps, order = _keep_plan(keep, T, inputs.device)
    U = _input_projection(W_in, inputs, bias, precision)  # (T, B, N)
    rnd = operand_rounder(precision)
    x = torch.zeros(B, N, dtype=inputs.dtype, device=inputs.device) if state0 is None else state0
    out = torch.empty((len(steps), B, N), dtype=inputs.dtype, device=inputs.device)
    sparse = W.layout == torch.sparse_csr
    WT = None if sparse else rnd(W).T
    leak_is_one = not isinstance(leak, torch.Tensor) and leak == 1.0
    slot = {s: i for i, s in enumerate(steps)}
    last = steps[-1]
    for t in range(last + 1):
        if sparse:
            pre = torch.sparse.mm(W, x.T).T + U[t]
        else:
            pre = torch.addmm(U[t], rnd(x), WT)
        h = torch.tanh(pre)
        x = h if leak_is_one else torch.lerp(x, h, leak)
        i = slot.get(t)
        if i is not None:
            out[i] = x
    return out if order is None else out.index_select(0, order)


# ---------------------------------------------------------------------------------------------
# Public op.
# ---------------------------------------------------------------------------------------------

def reservoir_run(
    W: torch.Tensor,
    W_in: torch.Tensor,
    inputs: torch.Tensor,
    leak: float | torch.Tensor = 1.0,
    bias: torch.Tensor | None = None,
    state0: torch.Tensor | None = None,
    *,
    keep="all",
    backend: str = "auto",
    check_finite_input: bool = True,
    precision: str = "fp32",
) -> torch.Tensor:
    """Run the leaky reservoir ``x_t = (1-a) x_{t-1} + a tanh(u_t W_in^T + x_{t-1} W^T + b)``.

    Args:
        W: recurrent weights (units, units), dense or ``torch.sparse_csr_tensor`` (sorted,
            unique, in-range column indices per row). float32 (float64 on reference / C++).
        W_in: input weights (units, inputs), same dtype and device.
        inputs: the sequence (time, batch, inputs); any strides (a stride-0 time axis, as from
            ``image_sequence(..., "static")``, is projected once).
        leak: ``a`` in (0, 1]: a number, or a tensor (units,) of one per unit.
        bias: (units,) or None.
        state0: initial state (batch, units) or None (zeros). Not modified.
        keep: ``"all"`` (every step), ``"last"`` (the last step only), or a sequence / 1-D
            integer tensor of step indices (0-based, negative counts from the end, any order,
            repeats allowed): the output holds those steps in that order.
        backend: ``"auto"``, ``"reference"``, ``"triton"`` or ``"cpp"``.
        check_finite_input: reject NaN/inf in the inputs, weights, bias and state0 (a NaN would
            poison every later state).
        precision: ``"fp32"``, ``"tf32"`` or ``"tf32x3"`` for the GEMMs (the input projection
            and ``x_{t-1} W^T``; see :mod:`bpalts._precision`); float32 and a dense ``W`` only.
            Triton: tensor cores in the batched path (batch > 8); the small-batch kernels
            (GEMV-like, memory-bound) compute ``x_{t-1} W^T`` in fp32 whatever it says (the
            input projection still follows it). Reference and C++:
            ``"tf32"`` emulated by rounding the operands (the C++ backend then runs every
            step's GEMM in torch), ``"tf32x3"`` as fp32.

    Returns:
        a fresh tensor (T_kept, batch, units) of states, the dtype and device of ``W``.
    """
    which = resolve_backend(backend, W.device if isinstance(W, torch.Tensor) else None)
    dtypes = FLOAT32_ONLY if which == "triton" else FLOAT32_OR_64
    sparse, leak = _check_inputs(W, W_in, inputs, leak, bias, state0, dtypes)
    precision = check_precision(precision, W.dtype)
    if sparse:
        _check_csr(W)
        if precision != "fp32":
            raise ValueError(f"precision={precision!r} needs a dense W (a sparse CSR W multiplies in fp32)")
    if which == "triton" and sparse:
        raise ValueError("triton backend needs a dense W (a sparse CSR W runs on the cpp or reference backend)")
    if check_finite_input:
        with one_finite_sync():  # one host sync for every finiteness check below
            check_finite("inputs", inputs)
            check_finite("W", W.values() if sparse else W)
            check_finite("W_in", W_in)
            if bias is not None:
                check_finite("bias", bias)
            if state0 is not None:
                check_finite("state0", state0)
    # keep is validated here too, before any kernel runs (an iterator read once, into a list).
    if isinstance(keep, (bytes, bytearray, Set, Mapping)):  # no step order, or not steps at all
        raise TypeError(f"keep must be 'all', 'last' or an ordered sequence of step indices (the "
                        f"states come back in its order), got {type(keep).__name__}")
    if not isinstance(keep, (str, torch.Tensor, Sequence)) and hasattr(keep, "__iter__"):
        try:
            keep = list(keep)
        except TypeError as e:  # e.g. a 0-d NumPy array: "iteration over a 0-d array"
            raise TypeError(f"keep must be 'all', 'last' or a sequence of step indices, "
                            f"got {type(keep).__name__} that cannot be iterated ({e})") from None
    _keep_plan(keep, inputs.shape[0], inputs.device)
    with torch.no_grad():
        if which == "reference":
            return reservoir_run_reference(W, W_in, inputs, leak, bias, state0, keep=keep,
                                           precision=precision)
        if which == "cpp":
            return _reservoir_run_cpp(W, W_in, inputs, leak, bias, state0, keep, precision)
        return _reservoir_run_triton(W, W_in, inputs, leak, bias, state0, keep, precision)


# Above this batch size the C++ backend runs each step's GEMM in MKL (torch.addmm) and only the
# tanh / leak epilogue in C++; at or below it the whole time loop runs in C++. Measured on a
# 2-core Xeon VM (AVX-512), both paths interleaved, ms (loop / MKL), 2 threads, with the
# sixteenth session's 8-row products: N2000 T200 B8 190 / 210, B10 220 / 231, B12 217-240 /
# 220-247 (0.98-1.00x), B14 275 / 249, B16 317 / 258; N1000 T300 B8 75 / 91, B12 107 / 108,
# B16 138 / 121. (With the earlier 4-row, 8-float products the loop lost from B8 on: B7 206 /
# 227, B8 213-233 / 194-206.)
CPP_LOOP_MAX_BATCH = 10
# At batch 1 with a dense W of at least this many bytes, the C++ loop reads each entry of W once
# per two steps (csrc/reservoir_run.cpp, run_dense_two_step): a step is a matrix-vector product
# bound by streaming W from L3 / memory once W outgrows the L2s. Measured on a 2-core Xeon VM
# (2 MB L2 per core), both paths interleaved, ms for T = 784, one-pass / two-step (sixteenth
# session, both with the 8-row products): N = 1000 (3.8 MB) 29.9 / 32.4, N = 1200 (5.5 MB) 43.2 /
# 44.6 (the one-pass loop wins while W about fits the L2s), N = 1400 (7.5 MB) 87.1 / 79.2,
# N = 2000 (15.3 MB) 223 / 158.
CPP_TWO_STEP_MIN_BYTES = 6 << 20
CPP_TWO_STEP_CHUNK = 192  # rows per chunk (a multiple of 4): one counter wait each; 48-384 measured alike


def _leak_vector(leak, N: int, like: torch.Tensor) -> torch.Tensor:
    if isinstance(leak, torch.Tensor):
        return leak.detach().contiguous().reshape(1, N)
    return torch.full((1, N), leak, dtype=like.dtype, device=like.device)


def _slots(steps: list[int]) -> torch.Tensor:
    """slot[t] = output index of step t (or -1) for t up to the last kept step."""
    slot = torch.full((steps[-1] + 1,), -1, dtype=torch.int64)
    slot[torch.tensor(steps, dtype=torch.int64)] = torch.arange(len(steps), dtype=torch.int64)
    return slot


def _reservoir_run_cpp(W, W_in, inputs, leak, bias, state0, keep, precision="fp32") -> torch.Tensor:
    """C++ backend: the input projection as one GEMM (MKL), the time loop in C++ (or, for large
    batches and for emulated TF32, each step's GEMM in torch and the epilogue in C++)."""
    C = cpp_module()
    if not hasattr(C, "reservoir_run_dense"):
        raise ValueError("cpp backend unavailable for reservoir_run: bpalts._C was built before "
                         "this op existed; rebuild the extension")
    T, B, _ = inputs.shape
    N = W.shape[0]
    steps, order = _keep_plan(keep, T, inputs.device)
    U = _input_projection(W_in.detach(), inputs.detach(), None if bias is None else bias.detach(),
                          precision)
    x0 = (torch.zeros((B, N), dtype=inputs.dtype) if state0 is None
          else state0.detach().contiguous())
    a = _leak_vector(leak, N, inputs)
    out = torch.empty((len(steps), B, N), dtype=inputs.dtype)
    sparse = W.layout == torch.sparse_csr
    if not sparse and (B > CPP_LOOP_MAX_BATCH or precision == "tf32"):
        # Large batch: the step is a real GEMM; MKL runs it, C++ fuses tanh and the leak. Also
        # the route for emulated TF32 (the C++ loop has no operand rounding).
        rnd = operand_rounder(precision)
        WT = rnd(W.detach()).T
        slot = {s: i for i, s in enumerate(steps)}
        pre = torch.empty((B, N), dtype=inputs.dtype)
        xs = [torch.empty((B, N), dtype=inputs.dtype), torch.empty((B, N), dtype=inputs.dtype)]
        x = x0
        ad = a.numpy()
        for t in range(steps[-1] + 1):
            torch.addmm(U[t], rnd(x), WT, out=pre)
            i = slot.get(t)
            xn = out[i] if i is not None else xs[t & 1]
            C.reservoir_epilogue(pre.numpy(), x.numpy(), ad, xn.numpy())
            x = xn
        return out if order is None else out.index_select(0, order)
    static = T > 1 and U.stride(0) == 0
    U2 = (U[0] if static else U).contiguous().reshape(-1, N)
    stride = 0 if static else B
    slots = _slots(steps)
    out2 = out.view(len(steps) * B, N)
    if sparse:
        crow = W.crow_indices().to(torch.int64).contiguous()
        col = W.col_indices().to(torch.int32).contiguous().numpy()
        if N <= 65536:  # 2-byte column indices: fewer bytes streamed per step
            col = col.astype("uint16")
        val = W.values().detach().contiguous()
        C.reservoir_run_csr(crow.numpy(), col, val.numpy(), U2.numpy(), stride, x0.numpy(),
                            a.numpy(), slots.numpy(), out2.numpy())
    else:
        Wc = W.detach().contiguous()
        if (B == 1 and Wc.numel() * Wc.element_size() >= CPP_TWO_STEP_MIN_BYTES
                and hasattr(C, "reservoir_run_dense_two_step")):
            C.reservoir_run_dense_two_step(Wc.numpy(), U2.numpy(), stride, x0.numpy(), a.numpy(),
                                           slots.numpy(), out2.numpy(), CPP_TWO_STEP_CHUNK)
        else:
            C.reservoir_run_dense(Wc.numpy(), U2.numpy(), stride, x0.numpy(), a.numpy(),
                                  slots.numpy(), out2.numpy())
    return out if order is None else out.index_select(0, order)


def _reservoir_run_triton(W, W_in, inputs, leak, bias, state0, keep, precision="fp32") -> torch.Tensor:
    from bpalts.kernels import reservoir_run as tk

    return tk.reservoir_run(W, W_in, inputs, leak, bias, state0, keep=keep, precision=precision)


# ---------------------------------------------------------------------------------------------
# Sequences from images.
# ---------------------------------------------------------------------------------------------

def image_sequence(images: torch.Tensor, mode: str = "rows", steps: int | None = None) -> torch.Tensor:
    """Turn a batch of 28x28 images into an input sequence (time, batch, inputs) for
    :func:`reservoir_run`.

    Args:
        images: (B, 784) or (B, 28, 28), floating point.
        mode: ``"static"``: the whole image (D = 784) held for ``steps`` steps (a stride-0 view:
            no copy); ``"rows"``: 28 steps of one 28-pixel row each (top to bottom, D = 28);
            ``"pixels"``: 784 steps of one pixel each (row-major order, D = 1).
        steps: number of steps, required for ``"static"`` (>= 1); for ``"rows"`` / ``"pixels"``
            leave it None (or give 28 / 784).
    """
    check_choice("mode", mode, SEQUENCE_MODES)
    if not isinstance(images, torch.Tensor):
        raise TypeError(f"images must be a torch.Tensor, got {type(images).__name__}")
    check_dense("images", images)
    if not images.is_floating_point():
        raise TypeError(f"images must be floating point, got {images.dtype}")
    if images.dim() == 3 and tuple(images.shape[1:]) == (28, 28):
        images = images.reshape(images.shape[0], 784)
    if images.dim() != 2 or images.shape[1] != 784:
        raise ValueError(f"images must be (batch, 784) or (batch, 28, 28), got shape {tuple(images.shape)}")
    B = images.shape[0]
    if B == 0:
        raise ValueError("images has an empty batch dimension")
    natural = {"rows": 28, "pixels": 784}
    if mode == "static":
        if steps is None:
            raise ValueError("steps is required for mode='static' (how many steps to hold the image)")
        check_int("steps", steps, 1, what="steps to hold the image")
        return images.unsqueeze(0).expand(steps, B, 784)
    if steps is not None and steps != natural[mode]:
        raise ValueError(f"mode={mode!r} has {natural[mode]} steps; steps must be None or {natural[mode]}, got {steps!r}")
    if mode == "rows":
        return images.reshape(B, 28, 28).transpose(0, 1).contiguous()
    return images.T.contiguous().unsqueeze(-1)
