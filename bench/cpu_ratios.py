"""The issues' CPU speed ratios (reference / C++), measured with the two backends interleaved.

pytest-benchmark (``bench/test_bench_*.py``) times all rounds of one backend, then all rounds of
the other. On a shared VM the machine's speed drifts by 20-30% within minutes, so a ratio of two
medians taken minutes apart moves with it. This script runs round after round over every case;
in each round it calls the two backends back to back (which goes first alternates between rounds)
on the same inputs and shapes as the pytest-benchmark files. Per case it reports:
- both medians and their ratio;
- the median of the per-round ratios (each a pair of adjacent calls) and their range;
- the issue's target, met or not, judged by the median paired ratio;
- the median minor page faults per call of each side: glibc hands the reference's large
  temporaries back to the kernel or keeps them depending on the process's history, so in some
  processes every reference call maps ~1500 fresh pages (softwta: 5.8 ms without, 9.2 ms with);
  a ratio far from the usual one usually shows up there;
- a floor, timed in the same rounds, and the ceiling it puts on the ratio (base / floor): the
  most any exact fp32 C++ path built on the same GEMMs could reach on this machine. For the
  GEMM-bound cases the floor replays the very GEMM calls the C++ path makes (recorded during the
  warm-up, same operands and output buffers) with nothing else; for the dense batch-1 reservoir
  it is the time to stream half of W per step (``W.sum()`` T/2 times): the two-step path reads
  about that much, and a step is bandwidth-bound. Cases where neither applies show ``-``.

Every timing goes to a CSV as it is taken (``--csv``; an interrupted run keeps its rounds), the
summary to stdout and, with ``--summary``, a second CSV.

    python bench/cpu_ratios.py                       # all cases, 15 rounds
    python bench/cpu_ratios.py --only reservoir --rounds 30
    OMP_NUM_THREADS=1 python bench/cpu_ratios.py     # one thread (torch and the C++ kernels)
    python bench/cpu_ratios.py --smoke               # tiny shapes, 2 rounds: checks it runs

The cases and targets (issues 3, 4, 5): every Hebbian rule >= 1.5x at B256 784->1024, SoftHebb
>= 1.5x, the sparse instar / krotov path >= 10x the dense reference op at 784->2000,
``pc_relax`` >= 2x at B256 T20, the dense reservoir >= 2x and the 5%-dense CSR one >= 5x the
dense reference at N2000 B1 T784.
"""
from __future__ import annotations

import argparse
import csv
import math
import statistics
import sys
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch

ROOT = Path(__file__).resolve().parent
sys.path.insert(0, str(ROOT))  # the pytest-benchmark files' input builders
sys.path.insert(0, str(ROOT.parent))

import bpalts  # noqa: E402
from test_bench_hebbian import _inputs as _hebbian_inputs  # noqa: E402  (softwta's are the same)
from bpalts.ops import hebbian_update, softwta_update  # noqa: E402
from bpalts.ops.hebbian_update import HEBBIAN_RULES, current_weights, hebbian_state, resolve_params  # noqa: E402
from bpalts.ops.pc_relax import pc_relax  # noqa: E402
from bpalts.ops.reservoir_run import image_sequence, reservoir_run  # noqa: E402

LR = 1e-6  # small enough that W stays finite over the repeated in-place updates
RULES = ("gha", "oja", "hpca", "nlpca_sym", "bcm", "instar", "krotov")


@dataclass
class Case:
    """One comparison: ``base`` (the reference as the issue names it) against ``other``."""

    name: str
    target: float
    base: Callable[[], object]
    other: Callable[[], object]
    # the floor: a callable, "gemms" (the GEMM calls ``other`` makes, recorded), or None (none)
    floor: Callable[[], object] | str | None = None


def _hebbian_cases(smoke: bool) -> list[Case]:
    B, D, N = (16, 40, 48) if smoke else (256, 784, 1024)
    cases = []
    for rule in RULES:
        per_backend = {}
        for backend in ("reference", "cpp"):
            W, X = _hebbian_inputs(B, D, N)
            kw = {"state": hebbian_state(rule, N, theta_init=0.3)} if HEBBIAN_RULES[rule].stateful else {}
            per_backend[backend] = (lambda W=W, X=X, kw=kw, be=backend, rule=rule: hebbian_update(
                W, X, rule=rule, lr=LR, backend=be, check_finite_input=False, **kw))
        cases.append(Case(f"hebbian_update[{rule}] B{B} {D}->{N}", 1.5, per_backend["reference"],
                          per_backend["cpp"], "gemms"))
    Nw = 60 if smoke else 2000
    for rule in ("instar", "krotov"):
        W0, X = _hebbian_inputs(B, D, Nw)
        W1 = W0.clone()
        r = HEBBIAN_RULES[rule]
        U = X @ current_weights(W0, r, resolve_params(r, W0).p).T
        cases.append(Case(
            f"hebbian_update[{rule}] B{B} {D}->{Nw} dense reference op vs C++ sparse path given U", 10.0,
            lambda W=W0, X=X, rule=rule: hebbian_update(W, X, rule=rule, lr=LR, backend="reference",
                                                        check_finite_input=False),
            lambda W=W1, X=X, U=U, rule=rule: hebbian_update(W, X, rule=rule, lr=LR, backend="cpp",
                                                             check_finite_input=False, currents=U)))
    return cases


def _softwta_cases(smoke: bool) -> list[Case]:
    B, D, N = (16, 40, 48) if smoke else (256, 784, 1024)
    fns = {}
    for backend in ("reference", "cpp"):
        W, X = _hebbian_inputs(B, D, N)
        fns[backend] = (lambda W=W, X=X, be=backend: softwta_update(W, X, lr=LR, backend=be,
                                                                    check_finite_input=False))
    return [Case(f"softwta_update B{B} {D}->{N}", 1.5, fns["reference"], fns["cpp"], "gemms")]


def _pc_cases(smoke: bool) -> list[Case]:
    from test_bench_pc import _inputs

    shapes = ([("pc_relax 20-16-12-8-10 B16 T3", (20, 16, 12, 8, 10), 16, 3, "tanh")] if smoke else
              [("pc_relax 784-1000-500-250-10 B256 T20", (784, 1000, 500, 250, 10), 256, 20, "tanh"),
               ("pc_relax 784-861-645-484-10 B256 T20 relu", (784, 861, 645, 484, 10), 256, 20, "relu")])
    cases = []
    for label, widths, B, T, act in shapes:
        Ws, bs, x, t = _inputs(widths, B)
        f = {be: (lambda be=be, Ws=Ws, bs=bs, x=x, t=t, T=T, act=act: pc_relax(
            Ws, x, t, T, 0.1, biases=bs, activation=act, backend=be, check_finite_input=False))
            for be in ("reference", "cpp")}
        cases.append(Case(label, 2.0, f["reference"], f["cpp"], "gemms"))
    return cases


def _reservoir_cases(smoke: bool) -> list[Case]:
    N, T, density = (64, 20, 0.05) if smoke else (2000, 784, 0.05)
    g = torch.Generator().manual_seed(0)
    W = torch.randn(N, N, generator=g)
    Ws = (W * (torch.rand(N, N, generator=g) < density) / math.sqrt(density)) * (0.9 / math.sqrt(N))
    W = W * (0.9 / math.sqrt(N))
    W_in = torch.rand(N, 1, generator=g) * 2 - 1
    u = image_sequence(torch.rand(1, 784, generator=g), "pixels")[:T]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "Sparse CSR tensor support is in beta state"
        Ws = Ws.to_sparse_csr()

    def run(w, be):
        return lambda: reservoir_run(w, W_in, u, 0.3, backend=be, check_finite_input=False)

    def stream_half_w():  # the bandwidth floor of a dense batch-1 step: half of W per step
        for _ in range((T + 1) // 2):
            W.sum()

    label = f"reservoir_run N{N} B1 T{T}"
    return [Case(f"{label} dense", 2.0, run(W, "reference"), run(W, "cpp"), stream_half_w),
            Case(f"{label} 5% CSR cpp vs the dense reference", 5.0, run(W, "reference"), run(Ws, "cpp"))]


_GEMMS = (
    (torch, "mm"), (torch, "addmm"), (torch, "matmul"), (torch.Tensor, "mm"), (torch.Tensor, "addmm"),
    (torch.Tensor, "addmm_"), (torch.Tensor, "matmul"), (torch.Tensor, "__matmul__"),
)


def record_gemms(fn: Callable[[], object]) -> list[tuple]:
    """Run ``fn`` once and return the GEMM calls it made (function, args, kwargs) in order.

    Patches torch's matrix-product entry points (``torch.mm``/``addmm``/``matmul``, the Tensor
    methods and ``@``) for the duration of the call; the arguments are the call's own tensors
    (operands and ``out=`` buffers), so :func:`replay` redoes exactly those products."""
    calls: list[tuple] = []
    saved = [(owner, name, getattr(owner, name)) for owner, name in _GEMMS]

    def wrap(orig):
        def recorder(*args, **kwargs):
            calls.append((orig, args, kwargs))
            return orig(*args, **kwargs)
        return recorder

    try:
        for owner, name, orig in saved:
            setattr(owner, name, wrap(orig))
        fn()
    finally:
        for owner, name, orig in saved:
            setattr(owner, name, orig)
    return calls


def replay(calls: list[tuple]) -> Callable[[], None]:
    """A callable that makes the recorded GEMM calls again, in order, and nothing else."""
    def run():
        for orig, args, kwargs in calls:
            orig(*args, **kwargs)
    return run


FAMILIES = {"hebbian": _hebbian_cases, "softwta": _softwta_cases, "pc": _pc_cases,
            "reservoir": _reservoir_cases}


def _minor_faults() -> int | None:
    """The process's minor page faults so far (None where ``resource`` is missing: Windows)."""
    try:
        import resource
    except ImportError:
        return None
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt


def _time(fn) -> tuple[float, int | None]:
    """Milliseconds of one call, and the minor page faults it took (None where unknown)."""
    f0 = _minor_faults()
    t0 = time.perf_counter()
    fn()
    ms = (time.perf_counter() - t0) * 1e3
    return ms, (None if f0 is None else _minor_faults() - f0)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=15, help="interleaved rounds (default 15)")
    ap.add_argument("--only", default="", help="run the cases whose name contains this text")
    ap.add_argument("--smoke", action="store_true", help="tiny shapes and 2 rounds")
    ap.add_argument("--csv", default="runs/cpu_ratios/timings.csv",
                    help="every timing, as it is taken (default runs/cpu_ratios/timings.csv)")
    ap.add_argument("--summary", default="", help="also write the summary table to this CSV")
    args = ap.parse_args(argv)
    if args.rounds < 1:
        ap.error(f"--rounds must be >= 1, got {args.rounds}")
    if "cpp" not in bpalts.available_backends("cpu"):
        print("bpalts._C is not built: there is no C++ backend to compare (see bpalts.info())",
              file=sys.stderr)
        return 2
    rounds = 2 if args.smoke else args.rounds
    cases = [c for make in FAMILIES.values() for c in make(args.smoke) if args.only in c.name]
    if not cases:
        ap.error(f"no case name contains {args.only!r}")
    info = bpalts.info(print_it=False)
    print(f"torch {info['torch']}, torch threads {info['torch_threads']}, C++ OpenMP threads "
          f"{info['cpp_openmp_threads']}, SIMD {info.get('cpp_simd')}; {len(cases)} cases, "
          f"{rounds} rounds (+1 warm-up)", flush=True)
    floors = {}
    for c in cases:  # warm-up: first-call costs (allocations, MKL / OpenMP start) off the clock
        c.base()
        c.other()
        if c.floor == "gemms":
            calls = record_gemms(c.other)
            if calls:
                floors[c.name] = replay(calls)
        elif c.floor is not None:
            floors[c.name] = c.floor
        if c.name in floors:
            floors[c.name]()
    times = {c.name: ([], [], []) for c in cases}
    faults = {c.name: ([], [], []) for c in cases}
    path = Path(args.csv)
    path.parent.mkdir(parents=True, exist_ok=True)
    labels = ("base", "other", "floor")
    with path.open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["round", "case", "backend", "ms", "minor_faults"])
        for r in range(rounds):
            for c in cases:
                order = [(0, c.base), (1, c.other)] + ([(2, floors[c.name])] if c.name in floors else [])
                if r % 2:
                    order.reverse()
                for k, fn in order:
                    ms, nf = _time(fn)
                    times[c.name][k].append(ms)
                    if nf is not None:
                        faults[c.name][k].append(nf)
                    w.writerow([r, c.name, labels[k], f"{ms:.4f}", "" if nf is None else nf])
            fh.flush()
            print(f"round {r + 1}/{rounds} done", file=sys.stderr, flush=True)
    rows = []
    for c in cases:
        tb, to, tf = times[c.name]
        fb, fo, _ = faults[c.name]
        paired = [b / o for b, o in zip(tb, to)]
        mp = statistics.median(paired)
        floor = statistics.median(tf) if tf else None
        rows.append({"case": c.name, "base ms": statistics.median(tb), "other ms": statistics.median(to),
                     "ratio of medians": statistics.median(tb) / statistics.median(to),
                     "median paired ratio": mp, "min paired": min(paired), "max paired": max(paired),
                     "target": c.target, "met": (mp >= c.target) if not args.smoke else "",
                     "floor ms": floor if floor is not None else "",
                     "ceiling": statistics.median([b / f for b, f in zip(tb, tf)]) if tf else "",
                     "base faults": statistics.median(fb) if fb else "",
                     "other faults": statistics.median(fo) if fo else ""})

    def verdict(r):  # the targets are for the issues' shapes, not the smoke run's
        return "(smoke: n/a)" if args.smoke else ("met" if r["met"] else "NOT met")

    def fmt_floor(r):
        if r["floor ms"] == "":
            return f"{'-':>9}  {'-':>7}"
        return f"{r['floor ms']:9.2f}  {r['ceiling']:6.2f}x"

    width = max(len(r["case"]) for r in rows)
    def fmt_faults(r):
        if r["base faults"] == "":
            return f"{'-':>11}"
        return f"{r['base faults']:>5g}/{r['other faults']:<5g}"

    print(f"{'case':<{width}}  {'base ms':>9}  {'other ms':>9}  {'ratio':>6}  {'paired (min-max)':>19}"
          f"  {'floor ms':>9}  {'ceiling':>7}  {'faults b/o':>11}  target")
    for r in rows:
        print(f"{r['case']:<{width}}  {r['base ms']:9.2f}  {r['other ms']:9.2f}  {r['ratio of medians']:5.2f}x"
              f"  {r['median paired ratio']:5.2f}x ({r['min paired']:.2f}-{r['max paired']:.2f})"
              f"  {fmt_floor(r)}  {fmt_faults(r)}  >= {r['target']:g}x {verdict(r)}")
    print("floor: the C++ path's own GEMM calls replayed alone (the reservoir: streaming half of W per "
          "step); ceiling: the median paired base / floor, the most an exact fp32 path on these GEMMs "
          "could reach here; faults b/o: median minor page faults per call of the base and the other "
          "(fresh pages the allocator had to map: each costs about a microsecond, and whether a "
          "process's allocator hands back reused memory or new pages varies from run to run)")
    print(f"timings: {path}")
    if args.summary:
        sp = Path(args.summary)
        sp.parent.mkdir(parents=True, exist_ok=True)
        with sp.open("w", newline="") as fh:
            w = csv.DictWriter(fh, fieldnames=list(rows[0]))
            w.writeheader()
            w.writerows(rows)
        print(f"summary: {sp}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
