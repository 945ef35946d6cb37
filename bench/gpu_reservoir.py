"""bench/gpu.py rows for the reservoir family: ``reservoir_run`` (leaky ESN, dense W).

Rows (DESIGN.md section 7 shapes):

- ``reservoir_run`` N2000 B1 T784 D1: the pixel sequence, batch 1. On CUDA the public op picks
  the persistent kernel (one launch for all 784 steps) with each program's 16 x 2000 slice of W
  resident in registers, its programs synchronised by tagged states (``DEFAULT_SYNC = "ll"``:
  value and step tag in one 64-bit word, one L2 round trip per step).
- ``reservoir_run[persistent-ll]`` / ``[persistent-barrier]`` same shape: that resident kernel
  with each of the two syncs named (``sync="ll"`` / ``"barrier"``, a grid barrier per step):
  what ``DEFAULT_SYNC`` is decided on.
- ``reservoir_run[persistent-stream]`` same shape: the persistent kernel re-reading W from L2
  at every step (``resident=False``), the path for N > 2048 or batches 2..8.
- ``reservoir_run[per-step]`` same shape: one launch per step (``persistent=False``), to see
  what the persistent kernel buys.
- ``reservoir_run`` N2000 B256 T28 D28: the row sequence, batch 256, the default path: each
  step's product by cuBLAS, then one elementwise kernel for tanh and the leak
  (``BATCHED_GEMM = "cublas"``).
- ``reservoir_run tf32x3`` / ``tf32`` same shape: tf32x3 runs the fused Triton GEMM step on
  tensor cores (``BATCHED_GEMM_TF32X3``) and is held to the fp32 tolerance; tf32 (cuBLAS) to the
  tf32 one (against the fp32 reference).
- ``reservoir_run[graph]`` (fp32 and tf32x3) same shape: the default per-step path replayed
  from the op's own cached CUDA graph (``GRAPH_MIN_STEPS``, off by default): its plain call
  against the default row's says what the per-step host overhead costs.
- ``reservoir_run[persistent-graph]`` N2000 B1 T784 D1: the default (persistent kernel) path
  with ``PERSISTENT_GRAPHS`` on (its plain calls replayed from a cached graph; off by default).
  This and the ``[graph]`` rows check their third call, a replay.
- ``reservoir_run[cublas-gemm]`` / ``[triton-gemm]`` (fp32, tf32 and tf32x3) same shape: each
  of ``BATCHED_GEMM``'s (``BATCHED_GEMM_TF32X3``'s) choices named (``gemm=``): cuBLAS (at
  tf32x3 one TF32 GEMM of the 3xTF32-split operands, K tripled), or the fused Triton GEMM step
  (tanh and the leak in its epilogue).

torch.compile of the reference is not timed for the 784-step row (Dynamo unrolls the loop into
thousands of ops; DESIGN.md has no anchor there either): its compile column reports why.
"""
from __future__ import annotations

import math

import torch

from bpalts.ops.reservoir_run import reservoir_run, reservoir_run_reference
from gpu_switches import check_a_replay, with_settings  # bench/, first on sys.path

# (op name, shape): (eager ms, CUDA graph ms, torch.compile ms, Triton target ms), NVIDIA H200.
ANCHORS: dict = {
    ("reservoir_run", "N2000 B1 T784 D1"): (82.0, 15.0, None, 2.0),
    ("reservoir_run[persistent-ll]", "N2000 B1 T784 D1"): (82.0, 15.0, None, 2.0),
    ("reservoir_run[persistent-stream]", "N2000 B1 T784 D1"): (82.0, 15.0, None, None),
    ("reservoir_run[per-step]", "N2000 B1 T784 D1"): (82.0, 15.0, None, None),
    ("reservoir_run", "N2000 B256 T28 D28"): (3.44, 2.06, 2.49, 1.5),
    ("reservoir_run tf32x3", "N2000 B256 T28 D28"): (3.44, 2.06, 2.49, 1.5),
    ("reservoir_run tf32", "N2000 B256 T28 D28"): (3.44, 2.06, 2.49, None),
    ("reservoir_run[persistent-barrier]", "N2000 B1 T784 D1"): (82.0, 15.0, None, 2.0),
    ("reservoir_run[persistent-graph]", "N2000 B1 T784 D1"): (82.0, 15.0, None, 2.0),
    ("reservoir_run[graph]", "N2000 B256 T28 D28"): (3.44, 2.06, 2.49, 1.5),
    ("reservoir_run[graph] tf32x3", "N2000 B256 T28 D28"): (3.44, 2.06, 2.49, 1.5),
    ("reservoir_run[cublas-gemm]", "N2000 B256 T28 D28"): (3.44, 2.06, 2.49, 1.5),
    ("reservoir_run[cublas-gemm] tf32", "N2000 B256 T28 D28"): (3.44, 2.06, 2.49, None),
    ("reservoir_run[triton-gemm]", "N2000 B256 T28 D28"): (3.44, 2.06, 2.49, 1.5),
    ("reservoir_run[triton-gemm] tf32", "N2000 B256 T28 D28"): (3.44, 2.06, 2.49, None),
    ("reservoir_run[cublas-gemm] tf32x3", "N2000 B256 T28 D28"): (3.44, 2.06, 2.49, 1.5),
    ("reservoir_run[triton-gemm] tf32x3", "N2000 B256 T28 D28"): (3.44, 2.06, 2.49, 1.5),
}
TOL_TF32 = 3e-3  # gpu.TOL_TF32

LEAK = 0.3


def _inputs(N: int, B: int, T: int, D: int):
    def make(device, gen, lr):  # lr: unused (not an update)
        # A reservoir with spectral radius about 0.9, inputs like MNIST pixels in [0, 1].
        W = torch.randn(N, N, generator=gen) * (0.9 / math.sqrt(N))
        W_in = (torch.rand(N, D, generator=gen) * 2 - 1) * 0.5
        inputs = torch.rand(T, B, D, generator=gen)
        return W.to(device), W_in.to(device), inputs.to(device)
    return make


@torch.compiler.disable
def _refuse_compile():
    raise RuntimeError("torch.compile not timed for the 784-step loop (it unrolls every step)")


def _reference_no_compile(W, W_in, inputs):
    if torch.compiler.is_compiling():
        _refuse_compile()
    return reservoir_run_reference(W, W_in, inputs, LEAK)


def ops(smoke: bool, Op) -> list:
    from bpalts.kernels import reservoir_run as tk

    if smoke:
        pixel = ("N37 B1 T6 D1", 37, 1, 6, 1)
        pixel_ll = ("N13 B1 T6 D1", 13, 1, 6, 1)  # one unit block: resident with one program
        rows = ("N45 B9 T4 D5", 45, 9, 4, 5)
    else:
        pixel = ("N2000 B1 T784 D1", 2000, 1, 784, 1)
        pixel_ll = pixel
        rows = ("N2000 B256 T28 D28", 2000, 256, 28, 28)

    def triton_op(W, W_in, inputs):
        return reservoir_run(W, W_in, inputs, LEAK, backend="triton", check_finite_input=False)

    def triton_stream(W, W_in, inputs):
        # persistent, W re-read every step (on the CPU interpreter: one program)
        return tk.reservoir_run(W, W_in, inputs, LEAK, persistent=True, resident=False,
                                n_programs=1 if smoke else None)

    def triton_ll(W, W_in, inputs):
        return tk.reservoir_run(W, W_in, inputs, LEAK, persistent=True, sync="ll",
                                n_programs=1 if smoke else None)

    def triton_barrier(W, W_in, inputs):  # the resident kernel with the grid barrier
        return tk.reservoir_run(W, W_in, inputs, LEAK, persistent=True, sync="barrier",
                                n_programs=1 if smoke else None)

    def triton_per_step(W, W_in, inputs):
        return tk.reservoir_run(W, W_in, inputs, LEAK, persistent=False)

    label, N, B, T, D = pixel
    out = [
        Op(name="reservoir_run", shape=label, make_inputs=_inputs(N, B, T, D),
           reference=_reference_no_compile, triton=triton_op),
        Op(name="reservoir_run[persistent-ll]", shape=pixel_ll[0], make_inputs=_inputs(*pixel_ll[1:]),
           reference=_reference_no_compile, triton=triton_ll),
        Op(name="reservoir_run[persistent-barrier]", shape=pixel_ll[0], make_inputs=_inputs(*pixel_ll[1:]),
           reference=_reference_no_compile, triton=triton_barrier),
        Op(name="reservoir_run[persistent-stream]", shape=label, make_inputs=_inputs(N, B, T, D),
           reference=_reference_no_compile, triton=triton_stream),
        Op(name="reservoir_run[per-step]", shape=label, make_inputs=_inputs(N, B, T, D),
           reference=_reference_no_compile, triton=triton_per_step),
    ]
    label, N, B, T, D = rows
    out.append(Op(name="reservoir_run", shape=label, make_inputs=_inputs(N, B, T, D),
                  reference=lambda W, W_in, inputs: reservoir_run_reference(W, W_in, inputs, LEAK),
                  triton=triton_op))
    for precision in ("tf32x3", "tf32"):
        out.append(Op(
            name=f"reservoir_run {precision}", shape=label, make_inputs=_inputs(N, B, T, D),
            reference=lambda W, W_in, inputs: reservoir_run_reference(W, W_in, inputs, LEAK),
            triton=lambda W, W_in, inputs, p=precision: reservoir_run(
                W, W_in, inputs, LEAK, backend="triton", check_finite_input=False, precision=p),
            tol=TOL_TF32 if precision == "tf32" else Op.tol,
            spec=None if precision != "tf32" else
            (lambda W, W_in, inputs: reservoir_run_reference(W, W_in, inputs, LEAK, precision="tf32"))))
    def triton_graphed(W, W_in, inputs, precision="fp32", switch="GRAPH_MIN_STEPS", on=1):
        """The public op with ``switch`` (GRAPH_MIN_STEPS or PERSISTENT_GRAPHS) on for this call."""
        return with_settings("reservoir_run", lambda: reservoir_run(
            W, W_in, inputs, LEAK, backend="triton", check_finite_input=False, precision=precision),
            **{switch: on})

    for precision in ("fp32", "tf32x3"):
        out.append(Op(
            name="reservoir_run[graph]" + ("" if precision == "fp32" else f" {precision}"), shape=label,
            make_inputs=_inputs(N, B, T, D),
            reference=lambda W, W_in, inputs: reservoir_run_reference(W, W_in, inputs, LEAK),
            triton=check_a_replay(lambda W, W_in, inputs, p=precision: triton_graphed(W, W_in, inputs, p))))
    # the default B1 path (the persistent kernel) with PERSISTENT_GRAPHS on
    label, N, B, T, D = pixel
    out.append(Op(
        name="reservoir_run[persistent-graph]", shape=label, make_inputs=_inputs(N, B, T, D),
        reference=_reference_no_compile,
        triton=check_a_replay(lambda W, W_in, inputs: triton_graphed(
            W, W_in, inputs, switch="PERSISTENT_GRAPHS", on=True))))
    label, N, B, T, D = rows
    for gemm in ("cublas", "triton"):  # BATCHED_GEMM's (and BATCHED_GEMM_TF32X3's) choices, named
        for precision in ("fp32", "tf32", "tf32x3"):
            out.append(Op(
                name=f"reservoir_run[{gemm}-gemm]" + ("" if precision == "fp32" else f" {precision}"),
                shape=label, make_inputs=_inputs(N, B, T, D),
                reference=lambda W, W_in, inputs: reservoir_run_reference(W, W_in, inputs, LEAK),
                triton=lambda W, W_in, inputs, p=precision, g=gemm: tk.reservoir_run(
                    W, W_in, inputs, LEAK, precision=p, gemm=g),
                tol=TOL_TF32 if precision == "tf32" else Op.tol,
                spec=None if precision != "tf32" else
                (lambda W, W_in, inputs: reservoir_run_reference(W, W_in, inputs, LEAK, precision="tf32"))))
    return out
