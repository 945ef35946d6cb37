"""bench/gpu.py rows for the predictive-coding family: ``pc_relax`` (issue 4).

The DESIGN.md section 7 shapes: network 784-1000-500-250-10 (tanh, clamped MSE output, value
nodes initialised by a feed-forward pass, step size 0.1), B256 T20, B256 T100, B4096 T20. The
reference is the eager plain-PyTorch specification (``pc_relax_reference``); both sides return
the relaxed states and errors, flattened into one tensor.

``... T3 relu ce`` rows: the PC learners' relaxation (``PCNetwork`` defaults: the shared 4-layer
widths 784-861-645-484-10, 3 steps, relu, clamped cross-entropy output, step size 0.1), on both
paths.

``pc_relax[rows]`` rows: the rows path (``kernels/pc_relax.py``'s ``_rows_kernel``: the whole
relaxation in one launch, one program per 16 rows, no synchronisation between programs), which
is off by default (``ROWS_MAX_ROWS = 0``) until these rows have timed it; the row switches it on
for its own calls only.

``pc_relax[persistent]`` rows: the persistent path (``_persistent_kernel``: one launch, at most
one program per SM, grid barriers between the phases of a step), off by default
(``PERSISTENT_MAX_ROWS = 0``), at the B256 shapes in fp32 and tf32x3 and the learners' setting.

``pc_relax[cublas]`` rows: the cuBLAS path (every GEMM by cuBLAS, the errors completed by its
``beta = 1`` accumulation, one fused elementwise launch per step), the default from 256 rows
(``CUBLAS_MIN_ROWS``) since the H100 timed it; at every shape in fp32, the largest batch also
in tf32 (cuBLAS's tensor cores), and the learners' relaxation.

``pc_relax[cublas-concurrent]`` rows: the same with each phase's GEMMs on side streams
(``CONCURRENT_GEMMS``, off until these rows have timed it), at the same shapes.

``pc_relax[cublas-full]`` and ``pc_relax[full]`` rows: plain calls that replay the plan's full
graph (``FULL_GRAPHS_MAX``: everything after the input copies, the feed-forward start included,
captured per parameter set; off until these rows have timed it), on the cuBLAS path (B256 T20,
the learners' B256 T3) and the tile path (the learners' own batch, B64 T3, also timed without).
Their check is the third call, a replay. Only the plain-call time differs from the rows
without: inside the bench's own graph both record the same launches.

``pc_relax[default]`` rows: the op as shipped (no module setting touched: since the eleventh
session the cuBLAS path from 256 rows with concurrent GEMMs at fp32 and full graphs), at every
shape, tf32 at the largest batch, and the learners' B256 and B64 relaxations; their check is a
replay too. The unbracketed ``pc_relax`` rows force the tile path.
"""
from __future__ import annotations

import math

import torch

from bpalts.ops.pc_relax import pc_relax, pc_relax_reference
from gpu_switches import check_a_replay, with_settings  # bench/, first on sys.path

NET = (784, 1000, 500, 250, 10)
NET_LABEL = "784-1000-500-250-10"
STEP_SIZE = 0.1

# (op name, shape label): (eager ms, CUDA graph ms, torch.compile ms, Triton target ms), H200.
ANCHORS: dict = {
    ("pc_relax", f"{NET_LABEL} B256 T20"): (7.26, 2.51, 3.46, 0.8),
    ("pc_relax", f"{NET_LABEL} B256 T100"): (37.5, 12.2, None, 3.0),
    ("pc_relax", f"{NET_LABEL} B4096 T20"): (12.4, 11.5, 9.92, 8.0),
    # precision="tf32" on the Triton side, the fp32 eager reference as the baseline (issue 4).
    ("pc_relax tf32", f"{NET_LABEL} B4096 T20"): (12.4, 11.5, 9.92, 2.5),
    # precision="tf32x3" (fp32-level accuracy on tensor cores, fp32 tolerance): the fp32 targets.
    ("pc_relax tf32x3", f"{NET_LABEL} B256 T20"): (7.26, 2.51, 3.46, 0.8),
    ("pc_relax tf32x3", f"{NET_LABEL} B4096 T20"): (12.4, 11.5, 9.92, 8.0),
    ("pc_relax[rows]", f"{NET_LABEL} B256 T20"): (7.26, 2.51, 3.46, 0.8),
    ("pc_relax[rows] tf32x3", f"{NET_LABEL} B256 T20"): (7.26, 2.51, 3.46, 0.8),
    ("pc_relax[rows] tf32x3", f"{NET_LABEL} B256 T100"): (37.5, 12.2, None, 3.0),
    ("pc_relax[rows] tf32x3", f"{NET_LABEL} B4096 T20"): (12.4, 11.5, 9.92, 8.0),
    ("pc_relax[rows] tf32", f"{NET_LABEL} B4096 T20"): (12.4, 11.5, 9.92, 2.5),
    ("pc_relax[rows]", f"{NET_LABEL} B256 T100"): (37.5, 12.2, None, 3.0),
    ("pc_relax[rows]", f"{NET_LABEL} B4096 T20"): (12.4, 11.5, 9.92, 8.0),
    ("pc_relax[persistent]", f"{NET_LABEL} B256 T20"): (7.26, 2.51, 3.46, 0.8),
    ("pc_relax[persistent]", f"{NET_LABEL} B256 T100"): (37.5, 12.2, None, 3.0),
    ("pc_relax[persistent] tf32x3", f"{NET_LABEL} B256 T20"): (7.26, 2.51, 3.46, 0.8),
    ("pc_relax[persistent] tf32x3", f"{NET_LABEL} B256 T100"): (37.5, 12.2, None, 3.0),
    ("pc_relax[cublas]", f"{NET_LABEL} B256 T20"): (7.26, 2.51, 3.46, 0.8),
    ("pc_relax[cublas]", f"{NET_LABEL} B256 T100"): (37.5, 12.2, None, 3.0),
    ("pc_relax[cublas]", f"{NET_LABEL} B4096 T20"): (12.4, 11.5, 9.92, 8.0),
    ("pc_relax[cublas] tf32", f"{NET_LABEL} B4096 T20"): (12.4, 11.5, 9.92, 2.5),
    ("pc_relax[cublas-concurrent]", f"{NET_LABEL} B256 T20"): (7.26, 2.51, 3.46, 0.8),
    ("pc_relax[cublas-full]", f"{NET_LABEL} B256 T20"): (7.26, 2.51, 3.46, 0.8),
    ("pc_relax[cublas-concurrent]", f"{NET_LABEL} B256 T100"): (37.5, 12.2, None, 3.0),
    ("pc_relax[cublas-concurrent]", f"{NET_LABEL} B4096 T20"): (12.4, 11.5, 9.92, 8.0),
    ("pc_relax[cublas-concurrent] tf32", f"{NET_LABEL} B4096 T20"): (12.4, 11.5, 9.92, 2.5),
}
LEARNER_NET = (784, 861, 645, 484, 10)  # bpalts.learners.layer_sizes(4)
LEARNER_LABEL = "784-861-645-484-10"
TOL_TF32 = 3e-3  # gpu.TOL_TF32: the tf32 row against the fp32 reference


def _inputs(widths, B):
    def make(device, gen, lr):  # lr unused: pc_relax has no learning rate
        Ws = [torch.randn(o, i, generator=gen) / math.sqrt(i) for i, o in zip(widths[:-1], widths[1:])]
        x = torch.rand(B, widths[0], generator=gen)
        t = torch.nn.functional.one_hot(torch.randint(0, widths[-1], (B,), generator=gen), widths[-1]).float()
        return tuple(v.to(device) for v in Ws + [x, t])
    return make


def _flat(res):
    return torch.cat([v.reshape(-1) for v in res.states + res.errors])


def ops(smoke: bool, Op) -> list:
    if smoke:
        rows = [((20, 37, 16, 10), "20-37-16-10 B8 T3", 8, 3), ((9, 40, 33, 10), "9-40-33-10 B35 T2", 35, 2)]
    else:
        rows = [(NET, f"{NET_LABEL} B256 T20", 256, 20), (NET, f"{NET_LABEL} B256 T100", 256, 100),
                (NET, f"{NET_LABEL} B4096 T20", 4096, 20)]
    def row(widths, label, B, T, precision="fp32", path="tiles", activation="tanh",
            output_energy="mse"):
        L = len(widths) - 1
        kw = dict(activation=activation, output_energy=output_energy)

        def triton(*a):
            def call():
                return _flat(pc_relax(list(a[:L]), a[L], a[L + 1], T, STEP_SIZE, precision=precision,
                                      backend="triton", check_finite_input=False, **kw))
            if path == "default":  # the module's settings as shipped
                return call()
            return with_settings("pc_relax", call,
                ROWS_MAX_ROWS=(1 << 30) if path == "rows" else 0,
                PERSISTENT_MAX_ROWS=(1 << 30) if path == "persistent" else 0,
                CUBLAS_MIN_ROWS=1 if path.startswith("cublas") else 0,
                CONCURRENT_GEMMS=path == "cublas-concurrent",
                CONCURRENT_GEMMS_TF32=path == "cublas-concurrent",
                FULL_GRAPHS_MAX=2 if path.endswith("full") else 0)

        name = "pc_relax" if path == "tiles" else f"pc_relax[{path}]"  # "full": the tiles
        return Op(
            name=name if precision == "fp32" else f"{name} {precision}",
            shape=label,
            make_inputs=_inputs(widths, B),
            reference=lambda *a: _flat(pc_relax_reference(list(a[:L]), a[L], a[L + 1], T, STEP_SIZE, **kw)),
            triton=check_a_replay(triton) if path in ("full", "cublas-full", "default") else triton,
            tol=TOL_TF32 if precision == "tf32" else Op.tol,
            spec=None if precision != "tf32" else (lambda *a: _flat(pc_relax_reference(
                list(a[:L]), a[L], a[L + 1], T, STEP_SIZE, precision="tf32", **kw))),
        )

    # every shape at fp32, then the largest batch again on tensor cores (the fp32 reference stays
    # the baseline), then tf32x3 (fp32-level accuracy on tensor cores) at the first and last
    out = [row(*r) for r in rows] + [row(*rows[-1], precision="tf32")]
    out += [row(*rows[0], precision="tf32x3"), row(*rows[-1], precision="tf32x3")]
    # the rows path: every shape at fp32 and at tf32x3, the largest batch at tf32 (its target)
    out += [row(*r, precision=p, path="rows") for p in ("fp32", "tf32x3") for r in rows]
    out += [row(*rows[-1], precision="tf32", path="rows")]
    # the persistent path at the small-batch shapes (every SM, one launch): fp32 and tf32x3
    out += [row(*r, precision=p, path="persistent") for p in ("fp32", "tf32x3") for r in rows[:-1]]
    # the cuBLAS path: every shape at fp32, the largest batch at tf32 (its target); the same with
    # each phase's GEMMs on side streams (CONCURRENT_GEMMS)
    for path in ("cublas", "cublas-concurrent"):
        out += [row(*r, path=path) for r in rows] + [row(*rows[-1], precision="tf32", path=path)]
    # the learners' relaxation on each path
    learner = ((20, 37, 16, 10), "20-37-16-10 B8 T3 relu ce", 8, 3) if smoke else (
        LEARNER_NET, f"{LEARNER_LABEL} B256 T3 relu ce", 256, 3)
    out += [row(*learner, activation="relu", output_energy="ce", path=p)
            for p in ("tiles", "rows", "persistent", "cublas", "cublas-concurrent", "cublas-full")]
    # the whole call replayed from a graph per parameter set (FULL_GRAPHS_MAX): the cuBLAS path
    # at B256 T20, and the tile path at the learners' own batch (64)
    out += [row(*rows[0], path="cublas-full")]
    learner64 = ((20, 37, 16, 10), "20-37-16-10 B4 T3 relu ce", 4, 3) if smoke else (
        LEARNER_NET, f"{LEARNER_LABEL} B64 T3 relu ce", 64, 3)
    out += [row(*learner64, activation="relu", output_energy="ce", path=p) for p in ("tiles", "full")]
    # the op as shipped (no switch touched): every shape, tf32 at the largest, the learners'
    out += [row(*r, path="default") for r in rows] + [row(*rows[-1], precision="tf32", path="default")]
    out += [row(*learner, activation="relu", output_energy="ce", path="default"),
            row(*learner64, activation="relu", output_energy="ce", path="default")]
    return out
