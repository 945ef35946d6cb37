"""One command for a GPU machine: check every Triton kernel against the reference, then time it.

    python bench/gpu.py                 # full run on a CUDA GPU, about 3.5 minutes on an H200
    python bench/gpu.py --quick         # fewer repetitions
    python bench/gpu.py --csv out.csv   # also save the table (rewritten after every op)
    python bench/gpu.py --smoke         # CPU smoke test: tiny shapes, Triton interpreter
    python bench/gpu.py --profile --only "pc_relax 784"   # kernels and device time per call
    python bench/gpu.py --warm-only --shard 0/6           # compile ahead (bench/gpu_session.sh)

For each hot op (the OPS list built by ``build_ops``):

(a) correctness: the Triton backend and the plain-PyTorch reference run on the same fresh random
    inputs (fp32, TF32 off); ``rel err`` = ||out_triton - out_ref|| / ||out_ref||, where for an
    in-place op "out" is the update (after - before, in float64). Above 1e-4 the row says FAIL.
    ``err64 t/r`` gives both backends' errors against a float64 reference, to tell which one
    is off when a row fails.
(b) timing (median of N runs after a warm-up, CUDA events, no sync inside a run): the eager
    reference, the reference captured in a CUDA graph and replayed, ``torch.compile`` of the
    reference (default mode, shapes static), the bpalts Triton backend through the public op
    (input finiteness check off: it syncs), and that Triton path captured in a CUDA graph.
    ``speedup`` = eager ms / triton ms.

Every per-op, per-column failure is caught and reported in the table (``-`` in the cell, the
reason in ``notes``, the traceback's tail after the table); the script always runs to the end.
Exit status: 1 if any correctness check failed or could not run, else 0 (timing failures do not
change it).

Without CUDA (or with ``--smoke``) it runs on the CPU: TRITON_INTERPRET=1 is set before Triton
is imported, shapes are tiny, time.perf_counter replaces CUDA events, CUDA graphs and
torch.compile are skipped; correctness is still checked. Timings there mean nothing.

Adding an op = appending ``Op`` entries in ``build_ops`` or in a family's ``bench/gpu_<family>.py``
(``ops(smoke, Op) -> list[Op]``, optional ``ANCHORS``), listed in ``FAMILY_MODULES``.
"""
from __future__ import annotations

import argparse
import importlib
import csv
import math
import os
import platform
import statistics
import sys
import time
import traceback
from dataclasses import dataclass
from typing import Any, Callable

from gpu_switches import check_a_replay, with_settings  # bench/, first on sys.path
from gpu_warm import pick, shard_arg

TOL = 1e-4  # relative error above which a row FAILs (DESIGN.md section 4: reductions)
TOL_TF32 = 3e-3  # the same for rows timed at precision="tf32" against the fp32 reference
SPEC_SLACK = 2.0  # rows with a ``spec``: tolerance max(tol, SPEC_SLACK * |spec - fp32 reference|)
LR_CHECK = 1.0  # correctness: an update much larger than W, so after - before keeps its digits
LR_TIME = 1e-6  # timing: hundreds of in-place updates keep W finite and close to its start

# Row providers for the other op families (bench/gpu_<family>.py, imported from this folder).
FAMILY_MODULES = ("gpu_pc", "gpu_reservoir", "gpu_ff")

# DESIGN.md section 7, NVIDIA H200, torch 2.11, fp32, TF32 off, median of 30, CUDA events.
ANCHORS = {
    # (op name, shape label): (eager ms, CUDA graph ms, torch.compile ms, Triton target ms or None)
    ("hebbian_update[gha]", "B256 784->1024"): (0.170, 0.121, 0.161, 0.08),
    ("hebbian_update[gha]", "B1024 4096->4096"): (4.91, 4.89, 4.91, None),
    ("softwta_update", "B256 784->1024"): (0.113, 0.063, 0.140, 0.04),
    ("softwta_update", "B1024 4096->4096"): (1.62, 1.59, 1.52, None),
    # precision="tf32" rows: target = eager fp32 / 4 (issue 3), the reference stays fp32.
    ("hebbian_update[gha] tf32", "B1024 4096->4096"): (4.91, 4.89, 4.91, 4.91 / 4),
    ("softwta_update tf32", "B1024 4096->4096"): (1.62, 1.59, 1.52, 1.62 / 4),
    # precision="tf32x3" rows: fp32-level accuracy on tensor cores, held to the fp32 tolerance
    # against the fp32 reference; shown against the fp32 targets of the same shape.
    ("hebbian_update[gha] tf32x3", "B256 784->1024"): (0.170, 0.121, 0.161, 0.08),
    ("softwta_update tf32x3", "B256 784->1024"): (0.113, 0.063, 0.140, 0.04),
    ("softwta_update tf32x3", "B1024 4096->4096"): (1.62, 1.59, 1.52, None),
    # the cuBLAS paths (CUBLAS_MIN_MACS / CUBLAS_MIN_MACS_TF32)
    ("hebbian_update[gha,cublas]", "B256 784->1024"): (0.170, 0.121, 0.161, 0.08),
    ("hebbian_update[gha,cublas] tf32", "B1024 4096->4096"): (4.91, 4.89, 4.91, 4.91 / 4),
    ("softwta_update[cublas]", "B256 784->1024"): (0.113, 0.063, 0.140, 0.04),
    ("softwta_update[cublas] tf32", "B1024 4096->4096"): (1.62, 1.59, 1.52, 1.62 / 4),
    ("softwta_update[cublas] tf32x3", "B256 784->1024"): (0.113, 0.063, 0.140, 0.04),
    ("softwta_update[cublas] tf32x3", "B1024 4096->4096"): (1.62, 1.59, 1.52, None),
    # the cuBLAS path with TRIL_FORM = "blocks" (the hierarchical decay in residual form)
    ("hebbian_update[gha,cublas-blocks]", "B256 784->1024"): (0.170, 0.121, 0.161, 0.08),
    ("hebbian_update[gha,cublas-blocks] tf32", "B1024 4096->4096"): (4.91, 4.89, 4.91, 4.91 / 4),
    # plain calls replayed from a cached CUDA graph (GRAPH_MAX_MACS)
    ("hebbian_update[gha,graph]", "B256 784->1024"): (0.170, 0.121, 0.161, 0.08),
    ("hebbian_update[gha,cublas-blocks-graph]", "B256 784->1024"): (0.170, 0.121, 0.161, 0.08),
    ("hebbian_update[gha,graph] tf32x3", "B256 784->1024"): (0.170, 0.121, 0.161, 0.08),
    ("softwta_update[graph]", "B256 784->1024"): (0.113, 0.063, 0.140, 0.04),
    ("softwta_update[cublas-graph]", "B256 784->1024"): (0.113, 0.063, 0.140, 0.04),
    ("softwta_update[graph] tf32x3", "B256 784->1024"): (0.113, 0.063, 0.140, 0.04),
    ("softwta_update[cublas-graph] tf32", "B1024 4096->4096"): (1.62, 1.59, 1.52, 1.62 / 4),
    ("softwta_update[cublas-split2]", "B256 784->1024"): (0.113, 0.063, 0.140, 0.04),
    ("softwta_update[cublas-split4]", "B256 784->1024"): (0.113, 0.063, 0.140, 0.04),
    ("softwta_update[cublas-split2] tf32", "B1024 4096->4096"): (1.62, 1.59, 1.52, 1.62 / 4),
}


# ---------------------------------------------------------------------------------------------
# Mode and environment: decided before Triton (or anything that imports it) is imported.
# ---------------------------------------------------------------------------------------------

def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--smoke", action="store_true",
                   help="CPU smoke test: tiny shapes, TRITON_INTERPRET=1, perf_counter timing, "
                        "no CUDA graphs / torch.compile (automatic when CUDA is unavailable)")
    p.add_argument("--quick", action="store_true", help="fewer repetitions (10 instead of 50)")
    p.add_argument("--reps", type=int, default=None, help="timed runs per column (median)")
    p.add_argument("--warmup", type=int, default=None, help="untimed runs before timing")
    p.add_argument("--csv", metavar="PATH", default=None, help="save the table as CSV")
    p.add_argument("--only", metavar="TEXT", nargs="+", default=None,
                   help="run only ops whose 'name shape' contains one of the TEXTs (e.g. gha 4096), "
                        "in the order of the first TEXT each matches")
    p.add_argument("--skip", metavar="TEXT", nargs="+", default=None,
                   help="leave out ops whose 'name shape' contains one of the TEXTs")
    p.add_argument("--first", metavar="TEXT", nargs="+", default=None,
                   help="run the ops whose 'name shape' contains one of the TEXTs first (in the "
                        "order of the first TEXT each matches), then the rest")
    p.add_argument("--warm-only", action="store_true",
                   help="launch each selected op's Triton call once, unchecked and untimed, to "
                        "fill Triton's compile cache (bench/gpu_warm.py)")
    p.add_argument("--profile", action="store_true",
                   help="instead of the table: each selected op's Triton call and its eager "
                        "reference under torch.profiler, the kernels each launches with their "
                        "device time per call")
    p.add_argument("--host", action="store_true",
                   help="instead of the table: each selected op's Triton call, plain calls back "
                        "to back: host ms per call and, from cProfile, the functions that cost it")
    p.add_argument("--shard", metavar="K/N", type=shard_arg, default=None,
                   help="only every N-th selected op, from op K (for parallel --warm-only)")
    p.add_argument("--no-compile", action="store_true", help="skip torch.compile")
    p.add_argument("--budget", type=float, default=270.0,
                   help="seconds; past this, torch.compile is skipped; past 1.5x this, every "
                        "remaining timing (correctness still runs)")
    return p.parse_args(argv)


ARGS = parse_args()

import torch  # noqa: E402  (does not import Triton)

CUDA = torch.cuda.is_available()
SMOKE = ARGS.smoke or not CUDA
if SMOKE:
    if not ARGS.smoke:
        print("NOTICE: CUDA is not available: running the CPU smoke test (tiny shapes, Triton "
              "interpreter, perf_counter timing, no CUDA graphs or torch.compile). "
              "Timings are meaningless; only correctness counts.\n", flush=True)
    # Must happen before Triton is imported: it picks the interpreter at import / jit time.
    os.environ["TRITON_INTERPRET"] = "1"
elif os.environ.get("TRITON_INTERPRET", "0") not in ("", "0"):
    print("WARNING: TRITON_INTERPRET is set on a GPU run: Triton kernels will run interpreted.",
          flush=True)

DEVICE = torch.device("cpu") if SMOKE else torch.device("cuda")

TRITON_VERSION: str | None
TRITON_ERROR: str | None = None
try:
    import triton  # noqa: E402

    TRITON_VERSION = triton.__version__
except Exception as exc:  # report and go on: the reference columns still mean something
    TRITON_VERSION = None
    TRITON_ERROR = f"{type(exc).__name__}: {exc}"

import bpalts  # noqa: E402
from bpalts.ops import hebbian_update, hebbian_update_reference  # noqa: E402
from bpalts.ops import softwta_update, softwta_update_reference  # noqa: E402
from bpalts.ops import softwta_conv_update, softwta_conv_update_reference  # noqa: E402


# ---------------------------------------------------------------------------------------------
# The ops.
# ---------------------------------------------------------------------------------------------

@dataclass
class Op:
    """One row of the table.

    make_inputs(device, generator, lr) -> tuple of args, float32, on ``device``; ``reference``
    and ``triton`` take ``*args`` and return the output. With ``inplace_arg`` set, the op
    updates ``args[inplace_arg]`` in place and the update (after - before) is what is compared.
    """

    name: str
    shape: str
    make_inputs: Callable[[torch.device, torch.Generator, float], tuple]
    reference: Callable[..., Any]
    triton: Callable[..., Any]
    inplace_arg: int | None = None
    tol: float = TOL  # e.g. TOL_TF32 for rows whose Triton side runs at precision="tf32"
    # The op's specification at the row's reduced precision (the reference with precision="tf32":
    # operands rounded to TF32). Where its own distance from the fp32 reference is larger than
    # ``tol``, the row passes up to SPEC_SLACK times that distance: a path that rounds its GEMM
    # operands exactly as specified must not fail for it.
    spec: Callable[..., Any] | None = None

    @property
    def anchor(self):
        return ANCHORS.get((self.name, self.shape), (None, None, None, None))


def _hebbian_inputs(B: int, D: int, N: int):
    def make(device, gen, lr):
        # Generated on the CPU, so a row is the same data on every machine; MNIST-like X.
        W = torch.randn(N, D, generator=gen) / math.sqrt(D)
        X = torch.rand(B, D, generator=gen)
        return W.to(device), X.to(device), lr
    return make


def _with_cublas(module: str, call: Callable[[], Any], on: bool = True, **settings):
    """``call()`` with ``bpalts.kernels.<module>.CUBLAS_MIN_MACS``, ``CUBLAS_MIN_MACS_TF32``
    (and ``CUBLAS_MIN_MACS_TF32X3`` where the module has it) = 1 (its cuBLAS path on at every
    precision), or 0 with ``on=False`` (the Triton GEMMs), and the module's other constants in
    ``settings`` set likewise."""
    tk = importlib.import_module(f"bpalts.kernels.{module}")
    if hasattr(tk, "CUBLAS_MIN_MACS_TF32X3"):
        settings = {"CUBLAS_MIN_MACS_TF32X3": int(on), **settings}
    return with_settings(module, call, CUBLAS_MIN_MACS=int(on), CUBLAS_MIN_MACS_TF32=int(on),
                          **settings)


def _plain_call_graphs(module: str, call: Callable[..., Any]) -> Callable[..., Any]:
    """For the ``[graph]`` rows: ``call(W, X, lr)`` with the module's ``GRAPH_MAX_MACS`` on (its
    plain calls replayed from a cached CUDA graph: kernels/_capture.py PlainCallGraphs); the
    row's check is a replay (:func:`gpu_switches.check_a_replay`, ``W`` restored)."""
    return check_a_replay(lambda W, X, lr: with_settings(module, lambda: call(W, X, lr),
                                                         GRAPH_MAX_MACS=1 << 62), in_place=(0,))


def build_ops(smoke: bool) -> list[Op]:
    """Every row, in order. To add an op, append its ``Op`` entries here."""
    if smoke:
        hebb_shapes = [("B8 20->24", 8, 20, 24), ("B33 70->130", 33, 70, 130)]
    else:
        hebb_shapes = [("B256 784->1024", 256, 784, 1024), ("B1024 4096->4096", 1024, 4096, 4096)]
    ops: list[Op] = []
    for label, B, D, N in hebb_shapes:
        # bcm is left out: its threshold is state the timing loop would keep moving.
        for rule in ("gha", "oja", "hpca", "nlpca_sym", "instar", "krotov"):
            ops.append(Op(
                name=f"hebbian_update[{rule}]",
                shape=label,
                make_inputs=_hebbian_inputs(B, D, N),
                # default args bind this rule (a closure would see the loop's last one)
                reference=lambda W, X, lr, rule=rule: hebbian_update_reference(W, X, rule, lr),
                triton=lambda W, X, lr, rule=rule: hebbian_update(
                    W, X, rule, lr, backend="triton", check_finite_input=False),
                inplace_arg=0,
            ))
    for label, B, D, N in hebb_shapes:  # SoftHebb, default flags (anti-Hebbian, adaptive, max-abs)
        ops.append(Op(
            name="softwta_update",
            shape=label,
            make_inputs=_hebbian_inputs(B, D, N),
            reference=lambda W, X, lr: softwta_update_reference(W, X, lr),
            triton=lambda W, X, lr: softwta_update(W, X, lr, backend="triton",
                                                   check_finite_input=False),
            inplace_arg=0,
        ))
    # precision="tf32" (tensor cores) against the fp32 eager reference, at the largest shape: the
    # Triton GEMMs (where CUBLAS_MIN_MACS_TF32 now picks the cuBLAS path, the [cublas] rows).
    label, B, D, N = hebb_shapes[-1]
    ops.append(Op(
        name="hebbian_update[gha] tf32", shape=label, make_inputs=_hebbian_inputs(B, D, N),
        reference=lambda W, X, lr: hebbian_update_reference(W, X, "gha", lr),
        triton=lambda W, X, lr: _with_cublas("hebbian_update", lambda: hebbian_update(
            W, X, "gha", lr, backend="triton", check_finite_input=False, precision="tf32"), on=False),
        inplace_arg=0, tol=TOL_TF32,
        spec=lambda W, X, lr: hebbian_update_reference(W, X, "gha", lr, precision="tf32"),
    ))
    ops.append(Op(
        name="softwta_update tf32", shape=label, make_inputs=_hebbian_inputs(B, D, N),
        reference=lambda W, X, lr: softwta_update_reference(W, X, lr),
        triton=lambda W, X, lr: _with_cublas("softwta_update", lambda: softwta_update(
            W, X, lr, backend="triton", check_finite_input=False, precision="tf32"), on=False),
        inplace_arg=0, tol=TOL_TF32,
        spec=lambda W, X, lr: softwta_update_reference(W, X, lr, precision="tf32"),
    ))
    # precision="tf32x3" (fp32-level products on tensor cores) at the B256 shape of the fp32
    # targets, held to the fp32 tolerance.
    label, B, D, N = hebb_shapes[0]
    ops.append(Op(
        name="hebbian_update[gha] tf32x3", shape=label, make_inputs=_hebbian_inputs(B, D, N),
        reference=lambda W, X, lr: hebbian_update_reference(W, X, "gha", lr),
        triton=lambda W, X, lr: hebbian_update(W, X, "gha", lr, backend="triton",
                                               check_finite_input=False, precision="tf32x3"),
        inplace_arg=0,
    ))
    ops.append(Op(
        name="softwta_update tf32x3", shape=label, make_inputs=_hebbian_inputs(B, D, N),
        reference=lambda W, X, lr: softwta_update_reference(W, X, lr),
        triton=lambda W, X, lr: softwta_update(W, X, lr, backend="triton", check_finite_input=False,
                                               precision="tf32x3"),
        inplace_arg=0,
    ))
    # ... and at the largest shape, on the Triton path (tl.dot tf32x3), the twin of the
    # softwta_update[cublas] tf32x3 row there (CUBLAS_MIN_MACS_TF32X3 is decided on the pair)
    if hebb_shapes[-1] is not hebb_shapes[0]:
        label, B, D, N = hebb_shapes[-1]
        ops.append(Op(
            name="softwta_update tf32x3", shape=label, make_inputs=_hebbian_inputs(B, D, N),
            reference=lambda W, X, lr: softwta_update_reference(W, X, lr),
            triton=lambda W, X, lr: _with_cublas("softwta_update", lambda: softwta_update(
                W, X, lr, backend="triton", check_finite_input=False, precision="tf32x3"), on=False),
            inplace_arg=0,
        ))
    # The cuBLAS paths (cuBLAS GEMMs, fused elementwise passes: CUBLAS_MIN_MACS in
    # kernels/hebbian_update.py and kernels/softwta_update.py) at the shapes of the targets: fp32
    # at B256, fp32 and tf32 at the largest shape; GHA, plus Oja (a subspace rule) and instar (a
    # competitive one) at the largest shape, where the switch is decided. The row switches the
    # path on for its own calls only.
    big = hebb_shapes[-1]
    cublas_rows = [(hebb_shapes[0], "fp32", "gha")]
    if big is not hebb_shapes[0]:
        cublas_rows += [(big, p, r) for p in ("fp32", "tf32") for r in ("gha", "oja", "instar")]
    # TRIL_FORM = "blocks" (the hierarchical decay as residual blocks): GHA at the same shapes.
    cublas_rows = [(shape, p, r, "panels") for shape, p, r in cublas_rows]
    cublas_rows += [(shape, p, r, "blocks") for shape, p, r, _ in cublas_rows if r == "gha"]
    for (label, B, D, N), precision, rule, form in cublas_rows:
        suffix = "" if precision == "fp32" else f" {precision}"
        tol = TOL_TF32 if precision == "tf32" else TOL
        variant = "cublas" if form == "panels" else "cublas-blocks"
        ops.append(Op(
            name=f"hebbian_update[{rule},{variant}]{suffix}", shape=label, make_inputs=_hebbian_inputs(B, D, N),
            reference=lambda W, X, lr, r=rule: hebbian_update_reference(W, X, r, lr),
            triton=lambda W, X, lr, p=precision, r=rule, f=form: _with_cublas("hebbian_update", lambda: hebbian_update(
                W, X, r, lr, backend="triton", check_finite_input=False, precision=p), TRIL_FORM=f),
            inplace_arg=0, tol=tol,
            spec=None if precision == "fp32" else
            (lambda W, X, lr, r=rule: hebbian_update_reference(W, X, r, lr, precision="tf32")),
        ))
    # The competitive rules with their currents U = X W~^T on the Triton GEMM (_matmul_kernel,
    # CUBLAS_MIN_MACS off): the twins of their default rows, whose currents come from cuBLAS from
    # the B256 shape on (kernels/hebbian_update.py _sparse_currents).
    for label, B, D, N in hebb_shapes:
        for rule in ("instar", "krotov"):
            ops.append(Op(
                name=f"hebbian_update[{rule},triton]", shape=label, make_inputs=_hebbian_inputs(B, D, N),
                reference=lambda W, X, lr, r=rule: hebbian_update_reference(W, X, r, lr),
                triton=lambda W, X, lr, r=rule: _with_cublas("hebbian_update", lambda: hebbian_update(
                    W, X, r, lr, backend="triton", check_finite_input=False), on=False),
                inplace_arg=0,
            ))
    # (tf32x3: one TF32 GEMM of 3xTF32-split operands per product, CUBLAS_MIN_MACS_TF32X3)
    for (label, B, D, N), precision in [(hebb_shapes[0], "fp32"), (hebb_shapes[0], "tf32x3")] + (
            [(big, "fp32"), (big, "tf32"), (big, "tf32x3")] if big is not hebb_shapes[0] else []):
        suffix = "" if precision == "fp32" else f" {precision}"
        ops.append(Op(
            name=f"softwta_update[cublas]{suffix}", shape=label, make_inputs=_hebbian_inputs(B, D, N),
            reference=lambda W, X, lr: softwta_update_reference(W, X, lr),
            triton=lambda W, X, lr, p=precision: _with_cublas("softwta_update", lambda: softwta_update(
                W, X, lr, backend="triton", check_finite_input=False, precision=p)),
            inplace_arg=0, tol=TOL_TF32 if precision == "tf32" else TOL,
            spec=None if precision != "tf32" else
            (lambda W, X, lr: softwta_update_reference(W, X, lr, precision="tf32")),
        ))
    # Plain calls replayed from a cached CUDA graph (GRAPH_MAX_MACS in kernels/hebbian_update.py
    # and kernels/softwta_update.py) at the B256 shape of the fp32 targets: the default (Triton)
    # path, the cuBLAS path (GHA with TRIL_FORM = "blocks"), and tf32x3.
    label, B, D, N = hebb_shapes[0]
    for variant, precision, cublas in (("graph", "fp32", False), ("cublas-graph", "fp32", True),
                                       ("graph", "tf32x3", False)):
        suffix = "" if precision == "fp32" else f" {precision}"
        p = "fp32" if precision == "fp32" else precision
        gha_variant = "cublas-blocks-graph" if cublas else variant
        ops.append(Op(
            name=f"hebbian_update[gha,{gha_variant}]{suffix}", shape=label,
            make_inputs=_hebbian_inputs(B, D, N),
            reference=lambda W, X, lr: hebbian_update_reference(W, X, "gha", lr),
            triton=_plain_call_graphs("hebbian_update", lambda W, X, lr, p=p, c=cublas: _with_cublas(
                "hebbian_update", lambda: hebbian_update(W, X, "gha", lr, backend="triton",
                                                         check_finite_input=False, precision=p),
                on=c, **({"TRIL_FORM": "blocks"} if c else {}))),
            inplace_arg=0,
        ))
        ops.append(Op(
            name=f"softwta_update[{variant}]{suffix}", shape=label, make_inputs=_hebbian_inputs(B, D, N),
            reference=lambda W, X, lr: softwta_update_reference(W, X, lr),
            triton=_plain_call_graphs("softwta_update", lambda W, X, lr, p=p, c=cublas: _with_cublas(
                "softwta_update", lambda: softwta_update(W, X, lr, backend="triton",
                                                         check_finite_input=False, precision=p),
                on=c)),
            inplace_arg=0,
        ))
    # SoftHebb's cuBLAS path with its forward GEMM split along the features (SPLIT_K), at B256
    # (2 and 4 parts) and at the largest shape (2 parts, fp32 and tf32)
    split_rows = [(hebb_shapes[0], "fp32", 2), (hebb_shapes[0], "fp32", 4)]
    if hebb_shapes[-1] is not hebb_shapes[0]:
        split_rows += [(hebb_shapes[-1], "fp32", 2), (hebb_shapes[-1], "tf32", 2)]
    for (label, B, D, N), precision, split in split_rows:
        ops.append(Op(
            name=f"softwta_update[cublas-split{split}]" + ("" if precision == "fp32" else f" {precision}"),
            shape=label, make_inputs=_hebbian_inputs(B, D, N),
            reference=lambda W, X, lr: softwta_update_reference(W, X, lr),
            triton=lambda W, X, lr, p=precision, k=split: _with_cublas("softwta_update", lambda: softwta_update(
                W, X, lr, backend="triton", check_finite_input=False, precision=p), SPLIT_K=k),
            inplace_arg=0, tol=TOL_TF32 if precision == "tf32" else TOL,
            spec=None if precision == "fp32" else
            (lambda W, X, lr: softwta_update_reference(W, X, lr, precision="tf32")),
        ))
    # ... and SoftHebb's tf32 target shape on its default (cuBLAS) path: 0.47 plain against 0.40
    # in a graph on the H100 (target 0.405)
    label, B, D, N = hebb_shapes[-1]
    if hebb_shapes[-1] is not hebb_shapes[0]:
        ops.append(Op(
            name="softwta_update[cublas-graph] tf32", shape=label, make_inputs=_hebbian_inputs(B, D, N),
            reference=lambda W, X, lr: softwta_update_reference(W, X, lr),
            triton=_plain_call_graphs("softwta_update", lambda W, X, lr: _with_cublas(
                "softwta_update", lambda: softwta_update(W, X, lr, backend="triton",
                                                         check_finite_input=False, precision="tf32"))),
            inplace_arg=0, tol=TOL_TF32,
            spec=lambda W, X, lr: softwta_update_reference(W, X, lr, precision="tf32"),
        ))
    # Convolutional SoftHebb: the two layers of the softhebb-conv network at batch 64.
    conv_shapes = ([("B2 1x9x9 k3->5", 2, 1, 9, 5, 3, 1)] if smoke else
                   [("B64 1x28x28 k5->96", 64, 1, 28, 96, 5, 2), ("B64 96x14x14 k3->384", 64, 96, 14, 384, 3, 1)])
    for label, B, C, H, K, ks, pad in conv_shapes:
        ops.append(Op(
            name="softwta_conv_update",
            shape=label,
            make_inputs=_conv_inputs(B, C, H, K, ks),
            reference=lambda W, X, lr, pad=pad: softwta_conv_update_reference(W, X, lr, padding=pad),
            triton=lambda W, X, lr, pad=pad: softwta_conv_update(
                W, X, lr, padding=pad, backend="triton", check_finite_input=False),
            inplace_arg=0,
        ))
    # The other families add their rows from bench/gpu_<family>.py: each module defines
    # ``ops(smoke, Op) -> list[Op]`` and may define ``ANCHORS`` (same layout as above).
    for module_name in FAMILY_MODULES:
        module = importlib.import_module(module_name)
        ANCHORS.update(getattr(module, "ANCHORS", {}))
        ops.extend(module.ops(smoke, Op))
    return ops


def _conv_inputs(B: int, C: int, H: int, K: int, ks: int):
    def make(device, gen, lr):
        W = torch.randn(K, C, ks, ks, generator=gen) * (2.0 / math.sqrt(C * ks * ks))
        X = torch.randn(B, C, H, H, generator=gen)
        return W.to(device), X.to(device), lr
    return make


# ---------------------------------------------------------------------------------------------
# Helpers.
# ---------------------------------------------------------------------------------------------

def _clone(args):
    return tuple(a.clone() if isinstance(a, torch.Tensor) else a for a in args)


def _to64(args):
    return tuple(a.double() if isinstance(a, torch.Tensor) and a.is_floating_point() else a
                 for a in args)


def _restore(args, pristine):
    for a, p in zip(args, pristine):
        if isinstance(a, torch.Tensor):
            a.copy_(p)


def _all_finite(args) -> bool:
    return all(bool(torch.isfinite(a).all()) for a in args
               if isinstance(a, torch.Tensor) and a.is_floating_point())


def _sync():
    if DEVICE.type == "cuda":
        torch.cuda.synchronize()


def rel_err(got: torch.Tensor, want: torch.Tensor) -> float:
    """||got - want|| / ||want|| in float64; a non-finite ``got`` gives inf."""
    got, want = got.double(), want.double()
    if not bool(torch.isfinite(got).all()):
        return float("inf")
    denom = want.norm().item()
    diff = (got - want).norm().item()
    return diff / denom if denom > 0 else diff


def _short(exc: BaseException, n: int = 70) -> str:
    msg = " ".join(f"{type(exc).__name__}: {exc}".split())
    return msg if len(msg) <= n else msg[: n - 3] + "..."


class Recorder:
    """Collects per-op notes and tracebacks without ever raising."""

    def __init__(self):
        self.notes: list[str] = []
        self.tracebacks: list[str] = []

    def fail(self, what: str, exc: BaseException, label: str):
        self.notes.append(f"{what}: {_short(exc)}")
        tail = traceback.format_exception(type(exc), exc, exc.__traceback__)
        self.tracebacks.append(f"--- {label} / {what}\n" + "".join(tail[-6:]).rstrip())
        # A failed capture or kernel may leave the CUDA stream in an error state: try to clear it.
        try:
            _sync()
        except Exception:
            pass


def _output(op: Op, args, ret, before):
    if op.inplace_arg is None:
        return ret
    return args[op.inplace_arg].double() - before[op.inplace_arg].double()


# ---------------------------------------------------------------------------------------------
# Correctness.
# ---------------------------------------------------------------------------------------------

def check(op: Op, seed: int, rec: Recorder, label: str) -> dict:
    res: dict = {"rel_err": None, "status": "ERROR", "err64_t": None, "err64_r": None}
    try:
        gen = torch.Generator().manual_seed(seed)
        args = op.make_inputs(DEVICE, gen, LR_CHECK)
        ref_args, tri_args = _clone(args), _clone(args)
        with torch.no_grad():
            ref = _output(op, ref_args, op.reference(*ref_args), args)
            tri = _output(op, tri_args, op.triton(*tri_args), args)
        _sync()
        err = rel_err(tri, ref)
        res["rel_err"] = err
        tol = op.tol
        if op.spec is not None:  # the specified rounding's own distance from fp32
            spec_args = _clone(args)
            with torch.no_grad():
                spec = _output(op, spec_args, op.spec(*spec_args), args)
            res["err_spec"] = rel_err(spec, ref)
            # Only a finite spec distance widens the tolerance: a non-finite spec (rel_err gives
            # inf) would make it inf, and the row would pass whatever the Triton side returned.
            if math.isfinite(res["err_spec"]):
                tol = max(tol, SPEC_SLACK * res["err_spec"])
        res["status"] = "ok" if err <= tol else "FAIL"
    except Exception as exc:
        rec.fail("check", exc, label)
        return res
    try:  # context: each backend's error against a float64 reference
        a64 = _to64(args)
        b64 = _clone(a64)
        with torch.no_grad():
            ref64 = _output(op, b64, op.reference(*b64), a64)
        res["err64_t"] = rel_err(tri, ref64)
        res["err64_r"] = rel_err(ref, ref64)
    except Exception as exc:
        rec.fail("fp64 reference", exc, label)
    return res


# ---------------------------------------------------------------------------------------------
# Timing.
# ---------------------------------------------------------------------------------------------

def time_fn(fn: Callable[[], Any], reps: int, warmup: int) -> float:
    """Median milliseconds of ``reps`` runs after ``warmup`` runs."""
    for _ in range(warmup):
        fn()
    _sync()
    if DEVICE.type == "cuda":
        starts = [torch.cuda.Event(enable_timing=True) for _ in range(reps)]
        ends = [torch.cuda.Event(enable_timing=True) for _ in range(reps)]
        for s, e in zip(starts, ends):
            s.record()
            fn()
            e.record()
        torch.cuda.synchronize()
        times = [s.elapsed_time(e) for s, e in zip(starts, ends)]
    else:
        times = []
        for _ in range(reps):
            t0 = time.perf_counter()
            fn()
            times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times)


def capture_graph(fn: Callable[[], Any], warmup: int = 3):
    """A CUDA graph of one call of ``fn`` (warmed up on a side stream first, as torch requires)."""
    s = torch.cuda.Stream()
    s.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(s):
        for _ in range(warmup):
            fn()
    torch.cuda.current_stream().wait_stream(s)
    torch.cuda.synchronize()
    g = torch.cuda.CUDAGraph()
    with torch.cuda.graph(g):
        fn()
    torch.cuda.synchronize()
    return g


def timings(op: Op, seed: int, reps: int, warmup: int, rec: Recorder, label: str,
            out_of_time: Callable[[str], bool], use_compile: bool) -> dict:
    res: dict = {k: None for k in ("eager", "graph", "compile", "triton", "triton_graph")}
    if out_of_time("eager"):
        rec.notes.append("timing skipped (time budget)")
        return res
    try:
        gen = torch.Generator().manual_seed(seed)
        args = op.make_inputs(DEVICE, gen, LR_TIME)
        pristine = _clone(args)
    except Exception as exc:
        rec.fail("inputs", exc, label)
        return res

    def run(key: str, make_fn: Callable[[], Callable[[], Any]]):
        if out_of_time(key):
            rec.notes.append(f"{key}: skipped (time budget)")
            return
        try:
            _restore(args, pristine)
            fn = make_fn()
            _restore(args, pristine)
            with torch.no_grad():
                res[key] = time_fn(fn, reps, warmup)
            if not _all_finite(args):
                rec.notes.append(f"{key}: inputs non-finite after timing")
        except Exception as exc:
            rec.fail(key, exc, label)
        finally:
            _restore_quiet(args, pristine)

    def graphed(call):
        def make():
            with torch.no_grad():
                g = capture_graph(call)
            return g.replay
        return make

    def compiled():
        torch._dynamo.reset()  # fresh caches: no recompile limits, no dynamic-shape guesses
        cfn = torch.compile(op.reference, dynamic=False)
        t0 = time.perf_counter()
        with torch.no_grad():
            cfn(*args)  # compiles
        _sync()
        rec.notes.append(f"compile {time.perf_counter() - t0:.1f}s")
        return lambda: cfn(*args)

    run("eager", lambda: (lambda: op.reference(*args)))
    if not SMOKE:
        run("graph", graphed(lambda: op.reference(*args)))
        if use_compile:
            run("compile", compiled)
    if TRITON_VERSION is not None:
        run("triton", lambda: (lambda: op.triton(*args)))
        if not SMOKE:
            run("triton_graph", graphed(lambda: op.triton(*args)))
    try:
        torch._dynamo.reset()
    except Exception:
        pass
    del args, pristine
    if DEVICE.type == "cuda":
        try:
            torch.cuda.empty_cache()
        except Exception:
            pass
    return res


def _restore_quiet(args, pristine):
    try:
        _restore(args, pristine)
    except Exception:
        pass


# ---------------------------------------------------------------------------------------------
# Table.
# ---------------------------------------------------------------------------------------------

COLUMNS = ["op", "shape", "rel err", "check", "err64 t/r", "eager ms", "graph ms", "compile ms",
           "triton ms", "triton-graph ms", "speedup vs eager", "anchor eager ms (H200)",
           "target ms", "notes"]


def _ms(v):
    return "-" if v is None else (f"{v:.3f}" if v < 100 else f"{v:.1f}")


def _err(v):
    return "-" if v is None else f"{v:.1e}"


def make_row(op: Op, c: dict, t: dict, notes: list[str]) -> dict:
    a_eager, _, _, target = op.anchor
    speed = (t["eager"] / t["triton"]) if t.get("eager") and t.get("triton") else None
    return {
        "op": op.name, "shape": op.shape,
        "rel err": _err(c.get("rel_err")), "check": c.get("status", "ERROR"),
        "err64 t/r": f"{_err(c.get('err64_t'))}/{_err(c.get('err64_r'))}",
        "eager ms": _ms(t.get("eager")), "graph ms": _ms(t.get("graph")),
        "compile ms": _ms(t.get("compile")), "triton ms": _ms(t.get("triton")),
        "triton-graph ms": _ms(t.get("triton_graph")),
        "speedup vs eager": "-" if speed is None else f"{speed:.2f}x",
        "anchor eager ms (H200)": _ms(a_eager), "target ms": "-" if target is None else f"<= {target}",
        "notes": "; ".join(notes),
    }


def format_table(rows: list[dict]) -> str:
    cols = [c for c in COLUMNS if c != "notes"]
    widths = {c: max(len(c), *(len(r[c]) for r in rows)) for c in cols}
    lines = ["  ".join(c.ljust(widths[c]) for c in cols),
             "  ".join("-" * widths[c] for c in cols)]
    lines += ["  ".join(r[c].ljust(widths[c]) for c in cols) for r in rows]
    noted = [r for r in rows if r["notes"]]
    if noted:
        lines.append("")
        lines.append("notes:")
        lines += [f"  {r['op']} {r['shape']}: {r['notes']}" for r in noted]
    return "\n".join(lines)


def write_csv(path: str, rows: list[dict], meta: dict):
    try:
        d = os.path.dirname(os.path.abspath(path))
        os.makedirs(d, exist_ok=True)
        with open(path, "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=list(meta) + COLUMNS)
            w.writeheader()
            for r in rows:
                w.writerow({**meta, **r})
    except Exception as exc:
        print(f"WARNING: could not write {path}: {_short(exc, 200)}", flush=True)


# ---------------------------------------------------------------------------------------------
# Main.
# ---------------------------------------------------------------------------------------------

def header() -> dict:
    if DEVICE.type == "cuda":
        try:
            name = torch.cuda.get_device_name(0)
            cap = ".".join(map(str, torch.cuda.get_device_capability(0)))
            device = f"{name} (sm {cap})"
        except Exception as exc:
            device = f"cuda ({_short(exc)})"
    else:
        device = f"CPU ({platform.processor() or platform.machine()}), Triton interpreter"
    meta = {
        "device": device,
        "torch": torch.__version__,
        "triton": TRITON_VERSION or f"unavailable ({TRITON_ERROR})",
        "cuda": torch.version.cuda or "-",
        "bpalts": bpalts.__version__,
        "mode": "smoke" if SMOKE else "gpu",
    }
    return meta


def disable_tf32():
    # Both the legacy flags (torch 2.11 and 2.14 accept them) and the precision knob.
    for stmt in (lambda: setattr(torch.backends.cuda.matmul, "allow_tf32", False),
                 lambda: setattr(torch.backends.cudnn, "allow_tf32", False),
                 lambda: torch.set_float32_matmul_precision("highest")):
        try:
            stmt()
        except Exception as exc:
            print(f"WARNING: could not disable TF32 ({_short(exc)})", flush=True)


def _first_match(op: Op, texts: list[str], default: int | None = None) -> int | None:
    """Index of the first TEXT that op's 'name shape' contains (``default`` if none does)."""
    return next((k for k, text in enumerate(texts) if text in f"{op.name} {op.shape}"), default)


def warm(ops: list[Op], t_start: float) -> int:
    """--warm-only: each op's Triton call once (compiles its kernels into Triton's cache)."""
    print(f"warming {len(ops)} ops", flush=True)
    failed = 0
    for i, op in enumerate(ops):
        label = f"{op.name} {op.shape}"
        try:
            args = op.make_inputs(DEVICE, torch.Generator().manual_seed(i), LR_CHECK)
            with torch.no_grad():
                op.triton(*args)
            _sync()
            what = "ok"
        except Exception as exc:  # the timed run reports it properly
            failed += 1
            what = f"failed: {_short(exc)}"
        print(f"[{i + 1}/{len(ops)} {time.perf_counter() - t_start:5.1f}s] {label}: {what}", flush=True)
    return 1 if failed else 0


PROFILE_CALLS = 5  # profiled calls per op and side (after 3 untimed ones)


def _self_time_us(event) -> float:
    """An averaged profiler event's self time on the device (CUDA) or the CPU (smoke mode), us."""
    names = ("self_device_time_total", "self_cuda_time_total") if DEVICE.type == "cuda" \
        else ("self_cpu_time_total",)
    for name in names:
        v = getattr(event, name, None)
        if v is not None:
            return float(v)
    return 0.0


def profile_ops(ops: list[Op]) -> int:
    """--profile: for each op, its Triton call and its eager reference, PROFILE_CALLS calls each
    under torch.profiler: wall time per call and the top kernels by device time per call (name,
    launches per call, us per call). Where the time goes inside a fused path: which kernel, and
    how much is gaps between launches (wall minus the kernels' sum)."""
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as torch_profile

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if DEVICE.type == "cuda" else [])
    failed = 0
    for i, op in enumerate(ops):
        for side, fn in (("triton", op.triton), ("eager", op.reference)):
            label = f"{op.name} {op.shape} [{side}]"
            try:
                args = op.make_inputs(DEVICE, torch.Generator().manual_seed(i), LR_TIME)
                with torch.no_grad():
                    for _ in range(3):
                        fn(*args)
                    _sync()
                    with torch_profile(activities=activities) as prof:
                        t0 = time.perf_counter()
                        for _ in range(PROFILE_CALLS):
                            fn(*args)
                        _sync()
                        wall = (time.perf_counter() - t0) / PROFILE_CALLS * 1e3
                events = [e for e in prof.key_averages() if _self_time_us(e) > 0]
                if DEVICE.type == "cuda":  # kernels and copies only: they run on the device
                    events = [e for e in events if str(getattr(e, "device_type", "")).endswith("CUDA")]
                events.sort(key=_self_time_us, reverse=True)
                busy = sum(_self_time_us(e) for e in events) / PROFILE_CALLS / 1e3
                print(f"\n== {label}: wall {wall:.3f} ms per call (profiled), "
                      f"{'device' if DEVICE.type == 'cuda' else 'CPU'} busy {busy:.3f} ms", flush=True)
                for e in events[:14]:  # cuBLAS kernels differ only past 70 characters
                    print(f"  {e.key[:140]:70s} {e.count / PROFILE_CALLS:7.1f} x  "
                          f"{_self_time_us(e) / PROFILE_CALLS:9.1f} us", flush=True)
            except Exception as exc:
                failed += 1
                print(f"\n== {label}: failed: {_short(exc, 200)}", flush=True)
    return 1 if failed else 0


HOST_CALLS = 50  # plain calls per op for --host (after 3 untimed ones)


def host_profile_ops(ops: list[Op]) -> int:
    """--host: where a plain call's host time goes. For each op's Triton call: HOST_CALLS calls
    back to back without a sync (host ms per call: what the caller waits for while the device
    keeps up; against the device time this says whether the call is launch-bound), then the same
    under cProfile, printing the functions with the most own time (us per call, calls per call,
    cumulative us per call). On the GPU rows the plain-call time far exceeds the graph replay
    (e.g. the cuBLAS softwta path at B256: 0.50 against 0.051 ms on an H100): this says which
    Python (validation, dispatch, Triton's launcher, torch's GEMM) costs it."""
    import cProfile
    import pstats

    failed = 0
    for i, op in enumerate(ops):
        label = f"{op.name} {op.shape}"
        try:
            args = op.make_inputs(DEVICE, torch.Generator().manual_seed(i), LR_TIME)
            with torch.no_grad():
                for _ in range(3):
                    op.triton(*args)
                _sync()
                t0 = time.perf_counter()
                for _ in range(HOST_CALLS):
                    op.triton(*args)
                host = (time.perf_counter() - t0) / HOST_CALLS * 1e3
                _sync()
                wall = (time.perf_counter() - t0) / HOST_CALLS * 1e3
                prof = cProfile.Profile()
                prof.enable()
                for _ in range(HOST_CALLS):
                    op.triton(*args)
                prof.disable()
                _sync()
            stats = pstats.Stats(prof).stats  # {(file, line, name): (cc, ncalls, tottime, cumtime, callers)}
            top = sorted(stats.items(), key=lambda kv: kv[1][2], reverse=True)[:15]
            print(f"\n== {label}: host {host:.3f} ms per call (no sync), {wall:.3f} ms with the device "
                  f"(synced after {HOST_CALLS})", flush=True)
            for (file, line, name), (_, ncalls, tt, ct, _) in top:
                where = f"{os.path.basename(file)}:{line}({name})" if line else name
                print(f"  {where[:72]:72s} {ncalls / HOST_CALLS:6.1f} x {tt / HOST_CALLS * 1e6:8.1f} us "
                      f"(cum {ct / HOST_CALLS * 1e6:8.1f})", flush=True)
        except Exception as exc:
            failed += 1
            print(f"\n== {label}: failed: {_short(exc, 200)}", flush=True)
    return 1 if failed else 0


def main() -> int:
    t_start = time.perf_counter()
    disable_tf32()
    meta = header()
    print(f"device : {meta['device']}")
    print(f"torch  : {meta['torch']}   triton: {meta['triton']}   CUDA: {meta['cuda']}   "
          f"bpalts: {meta['bpalts']}   python: {platform.python_version()}")
    tf32 = getattr(torch.backends.cuda.matmul, "allow_tf32", None)
    print(f"fp32, TF32 matmul allowed: {tf32}, float32 matmul precision: "
          f"{torch.get_float32_matmul_precision()}, TRITON_INTERPRET="
          f"{os.environ.get('TRITON_INTERPRET', '')}")
    if TRITON_ERROR:
        print(f"WARNING: Triton does not import ({TRITON_ERROR}): Triton columns will be '-'.")

    if SMOKE:
        reps, warmup = ARGS.reps or 3, ARGS.warmup if ARGS.warmup is not None else 1
    else:
        reps = ARGS.reps or (10 if ARGS.quick else 50)
        warmup = ARGS.warmup if ARGS.warmup is not None else (3 if ARGS.quick else 10)
    use_compile = not ARGS.no_compile and not SMOKE

    try:
        ops = build_ops(SMOKE)
    except Exception as exc:
        print(f"ERROR: could not build the op list: {_short(exc, 300)}")
        traceback.print_exc()
        return 1
    if ARGS.only:
        ops = sorted((o for o in ops if _first_match(o, ARGS.only) is not None),
                     key=lambda o: _first_match(o, ARGS.only))
    if ARGS.skip:
        ops = [o for o in ops if not any(text in f"{o.name} {o.shape}" for text in ARGS.skip)]
    if ARGS.first:  # sorted() is stable: the rest keep their order
        ops = sorted(ops, key=lambda o: _first_match(o, ARGS.first, default=len(ARGS.first)))
    ops = pick(ops, ARGS.shard)
    if ARGS.warm_only:
        return warm(ops, t_start)
    if ARGS.profile:
        return profile_ops(ops)
    if ARGS.host:
        return host_profile_ops(ops)
    print(f"{len(ops)} ops; timing: median of {reps} after {warmup} warm-up runs "
          f"({'time.perf_counter' if SMOKE else 'CUDA events'}); lr {LR_TIME} while timing; "
          f"budget {ARGS.budget:.0f}s\n", flush=True)

    def out_of_time(key: str = "") -> bool:
        # torch.compile (seconds to a minute per row) stops at the budget; the cheap columns
        # (eager, graph, Triton) go on for another half budget, so every row still gets its
        # Triton timing.
        limit = ARGS.budget if key == "compile" else 1.5 * ARGS.budget
        return time.perf_counter() - t_start > limit

    rows, tracebacks, bad = [], [], 0
    for i, op in enumerate(ops):
        label = f"{op.name} {op.shape}"
        rec = Recorder()
        c = check(op, seed=1000 + i, rec=rec, label=label)
        if c["status"] != "ok":
            bad += 1
        if c.get("err_spec") is not None:
            rec.notes.append(f"tf32 spec err {_err(c['err_spec'])}")
        if TRITON_VERSION is None:
            rec.notes.append("triton unavailable")
        t = timings(op, seed=2000 + i, reps=reps, warmup=warmup, rec=rec, label=label,
                    out_of_time=out_of_time, use_compile=use_compile)
        row = make_row(op, c, t, rec.notes)
        rows.append(row)
        tracebacks += rec.tracebacks
        print(f"[{i + 1}/{len(ops)} {time.perf_counter() - t_start:5.1f}s] {label}: "
              f"rel err {row['rel err']} {row['check']}; eager {row['eager ms']}, graph "
              f"{row['graph ms']}, compile {row['compile ms']}, triton {row['triton ms']}, "
              f"triton-graph {row['triton-graph ms']} ms"
              + (f"  [{row['notes']}]" if row["notes"] else ""), flush=True)
        if ARGS.csv:
            write_csv(ARGS.csv, rows, meta)

    print()
    print(f"{meta['device']} | torch {meta['torch']} | triton {meta['triton']} | "
          f"CUDA {meta['cuda']}")
    print(format_table(rows) if rows else "(no ops selected)")
    print(f"\nrel err: Triton vs the fp32 reference on the same inputs (update after - before); "
          f"FAIL above {TOL:g} ({TOL_TF32:g} for tf32 rows, or {SPEC_SLACK:g} x the tf32 spec err "
          f"noted: the tf32-rounded reference's own distance from fp32). err64 t/r: Triton / reference vs a float64 reference.")
    print("speedup vs eager = eager ms / triton ms. Anchors (DESIGN.md section 7, H200, "
          "torch 2.11): GHA B256 784->1024 eager 0.170 / graph 0.121 / compile 0.161 ms, "
          "Triton target <= 0.08 ms; GHA B1024 4096->4096 eager 4.91 / graph 4.89 / compile "
          "4.91 ms (fp32 floor 4.76).")
    if SMOKE:
        print("SMOKE MODE (CPU, Triton interpreter): timings are meaningless.")
    if tracebacks:
        print("\nerrors (traceback tails):")
        print("\n".join(tracebacks))
    if ARGS.csv:
        write_csv(ARGS.csv, rows, meta)
        print(f"\nsaved {ARGS.csv}")
    print(f"\n{len(rows) - bad}/{len(rows)} correctness checks ok; total "
          f"{time.perf_counter() - t_start:.1f}s")
    return 1 if bad else 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        sys.exit(130)
