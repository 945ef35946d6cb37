"""Tile-size sweep for the Triton GEMM kernels on the GPU: which (block, warps, stages) is fastest.

    python bench/gpu_tiles.py                  # CUDA: every case, every config (see below)
    python bench/gpu_tiles.py --csv tiles.csv  # also one CSV row per (case, config), as made
    python bench/gpu_tiles.py --only pc        # cases whose label contains the text
    python bench/gpu_tiles.py --smoke          # CPU interpreter, tiny shapes: proves it runs

Each case is one op at one shape through its public function (``backend="triton"``, finiteness
check off). A config overrides the kernel module's tile constants (``BM``, ``BN``, ``BK``,
``NUM_WARPS``, ``NUM_STAGES``, ...) for the duration of the case; the first row of every case is
the module's defaults. For each config: ``rel err`` against the fp32 reference (tf32 cases: the
tf32 tolerance), and the median of ``--reps`` CUDA-event timings of the op captured in a CUDA graph
and replayed (so Python launch overhead is not counted; pc_relax, which graphs its step loop
itself, is timed as plain calls). The winner of a case is what the module's defaults should be.

Time: on an H200 (2026-11-27) the first version (the last seven cases) and the quick comparison
took 190 s together. With the cases added since, allow about 6 minutes, or pick cases with
``--only``. The cases never swept come first: the persistent and cuBLAS paths of ``pc_relax``,
the cuBLAS paths of gha and softwta (their first config is the module's defaults, i.e. the
Triton path, as the baseline), then tf32x3.
"""
from __future__ import annotations

import argparse
import csv
import math
import os
import statistics
import sys
import time

from gpu_warm import pick, shard_arg  # bench/, first on sys.path

p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
p.add_argument("--smoke", action="store_true")
p.add_argument("--reps", type=int, default=20)
p.add_argument("--csv", default=None)
p.add_argument("--only", default=None)
p.add_argument("--warm-only", action="store_true",
               help="launch each (case, config) once, unchecked and untimed, to fill Triton's "
                    "compile cache (bench/gpu_warm.py)")
p.add_argument("--shard", metavar="K/N", type=shard_arg, default=None,
               help="only every N-th (case, config) pair, from pair K (for parallel --warm-only)")
ARGS = p.parse_args()

import torch  # noqa: E402

SMOKE = ARGS.smoke or not torch.cuda.is_available()
if SMOKE:
    os.environ["TRITON_INTERPRET"] = "1"
DEV = torch.device("cpu" if SMOKE else "cuda")

import gpu_pc  # noqa: E402  (bench/, first on sys.path: the rows' input makers)
import gpu_reservoir  # noqa: E402
from bpalts.kernels import ff_layer_step as k_ff  # noqa: E402
from bpalts.kernels import hebbian_update as k_hebb  # noqa: E402
from bpalts.kernels import pc_relax as k_pc  # noqa: E402
from bpalts.kernels import reservoir_run as k_res  # noqa: E402
from bpalts.kernels import softwta_update as k_swta  # noqa: E402
from bpalts.ops import (ff_layer_step, ff_layer_step_reference, hebbian_update,  # noqa: E402
                        hebbian_update_reference, pc_relax, pc_relax_reference, reservoir_run,
                        reservoir_run_reference, softwta_update, softwta_update_reference)

torch.backends.cuda.matmul.allow_tf32 = False


def hebb_inputs(B, D, N):
    g = torch.Generator().manual_seed(0)
    return (torch.randn(N, D, generator=g) / math.sqrt(D)).to(DEV), torch.rand(B, D, generator=g).to(DEV)


def made(make):
    """The inputs of a gpu.py row maker (``make(device, generator, lr)``), seed 0, on DEV."""
    return make(DEV, torch.Generator().manual_seed(0), None)


def _for_precision(configs, precision, module):
    """tf32 launches read the modules' ``*_TF32`` tile constants (BM -> BM_TF32, ...); tf32x3
    ones their ``*_TF32X3`` constants where the module has them, else the ``*_TF32`` ones."""
    if precision == "fp32":
        return configs
    warps = ("NUM_WARPS", "NUM_STAGES")

    def name(k):
        if k in warps:
            return k
        if precision == "tf32x3" and hasattr(module, f"{k}_TF32X3"):
            return f"{k}_TF32X3"
        return f"{k}_TF32"
    return [{name(k): v for k, v in c.items()} for c in configs]


def hebb_case(label, B, D, N, rule, precision, configs):
    W0, X = hebb_inputs(B, D, N)

    def ref():
        W = W0.clone()
        return hebbian_update_reference(W, X, rule, 1.0) - W0

    def tri():
        W = W0.clone()
        hebbian_update(W, X, rule, 1.0, backend="triton", check_finite_input=False, precision=precision)
        return W - W0

    def timed():
        W = W0.clone()
        return lambda: hebbian_update(W, X, rule, 1e-6, backend="triton", check_finite_input=False,
                                      precision=precision)
    return dict(label=label, module=k_hebb, ref=ref, tri=tri, timed=timed, graph=True,
                tol=3e-3 if precision == "tf32" else 1e-4,
                configs=_for_precision(configs, precision, k_hebb))


def swta_case(label, B, D, N, precision, configs):
    W0, X = hebb_inputs(B, D, N)

    def ref():
        W = W0.clone()
        return softwta_update_reference(W, X, 1.0) - W0

    def tri():
        W = W0.clone()
        softwta_update(W, X, 1.0, backend="triton", check_finite_input=False, precision=precision)
        return W - W0

    def timed():
        W = W0.clone()
        return lambda: softwta_update(W, X, 1e-6, backend="triton", check_finite_input=False,
                                      precision=precision)
    return dict(label=label, module=k_swta, ref=ref, tri=tri, timed=timed, graph=True,
                tol=3e-3 if precision == "tf32" else 1e-4,
                configs=_for_precision(configs, precision, k_swta))


def pc_case(label, widths, B, T, precision, configs):
    *Ws, x, t = made(gpu_pc._inputs(widths, B))
    flat = gpu_pc._flat

    def ref():
        return flat(pc_relax_reference(Ws, x, t, T, 0.1))

    def tri():
        return flat(pc_relax(Ws, x, t, T, 0.1, backend="triton", check_finite_input=False,
                             precision=precision))

    def timed():
        return lambda: pc_relax(Ws, x, t, T, 0.1, backend="triton", check_finite_input=False,
                                precision=precision)
    return dict(label=label, module=k_pc, ref=ref, tri=tri, timed=timed, graph=False,
                tol=3e-3 if precision == "tf32" else 1e-4, configs=configs)


def res_case(label, N, B, T, D, configs, precision="fp32"):
    W, W_in, u = made(gpu_reservoir._inputs(N, B, T, D))

    def timed():
        return lambda: reservoir_run(W, W_in, u, 0.5, backend="triton", check_finite_input=False,
                                     precision=precision)
    # the reservoir kernels have one set of tiles for every precision
    return dict(label=label, module=k_res, ref=lambda: reservoir_run_reference(W, W_in, u, 0.5),
                tri=lambda: timed()(), timed=timed, graph=True,
                tol=3e-3 if precision == "tf32" else 1e-4, configs=configs)


def ff_case(label, B, D, N, configs):
    g = torch.Generator().manual_seed(0)
    W = (torch.randn(N, D, generator=g) / math.sqrt(D)).to(DEV)
    b = torch.zeros(N).to(DEV)
    xp, xn = torch.rand(B, D, generator=g).to(DEV), torch.rand(B, D, generator=g).to(DEV)
    th = float(N) * 0.1

    def tri():
        return flat_ff(ff_layer_step(W, b, xp, xn, th, backend="triton", check_finite_input=False))

    def timed():
        return lambda: ff_layer_step(W, b, xp, xn, th, backend="triton", check_finite_input=False)
    return dict(label=label, module=k_ff, ref=lambda: flat_ff(ff_layer_step_reference(
                    W, b, xp, xn, th, None, None, 1e-8, True)),
                tri=tri, timed=timed, graph=True, tol=1e-4, configs=configs)


def flat_ff(r):
    return torch.cat([r.grad_W.reshape(-1), r.grad_b.reshape(-1), r.h_pos.reshape(-1)])


def res_cfgs():
    if SMOKE:
        return [{}, dict(BM=16, BN=16, BK=16, SMALL_BATCH_MAX=1)]
    return [{}, dict(BM=32, BN=64), dict(BM=32, BN=32), dict(BM=64, BN=32), dict(BM=128, BN=64, NUM_WARPS=8),
            dict(BM=64, BN=128, NUM_WARPS=8), dict(BK=64), dict(BM=32, BN=64, BK=64, NUM_WARPS=2)]


def ff_cfgs():
    if SMOKE:
        return [{}, dict(BM1=16, BN1=16, BK1=16, BN3=16, BD3=16, BK3=16)]
    return [{}, dict(BM1=64, BN1=64), dict(BM1=32, BN1=32), dict(BN3=32, BD3=64), dict(BN3=64, BD3=128),
            dict(BN3=128, BD3=128, NUM_WARPS=8), dict(BK1=64, BK3=64), dict(NUM_WARPS=8)]


def hebb_cfgs(big):
    if SMOKE:
        return [{}, dict(BM=32, BN=32, BK=16)]
    c = [{}, dict(BM=32, BN=32, BK=32), dict(BM=32, BN=64, BK=32), dict(BM=64, BN=64, BK=16),
         dict(BM=64, BN=64, BK=32, NUM_STAGES=4), dict(BM=64, BN=128, BK=32, NUM_WARPS=4)]
    if big:
        c += [dict(BM=128, BN=128, BK=32, NUM_WARPS=8), dict(BM=128, BN=128, BK=32, NUM_WARPS=4),
              dict(BM=128, BN=64, BK=32, NUM_WARPS=4), dict(BM=128, BN=128, BK=64, NUM_WARPS=8, NUM_STAGES=2),
              dict(BM=128, BN=256, BK=32, NUM_WARPS=8)]
    return c


def swta_cfgs(big):
    if SMOKE:
        return [{}, dict(BM1=16, BN1=32, BK1=16, BM2=32, BN2=32, BK2=16)]
    c = [{}, dict(BM1=64, BN1=64), dict(BM2=32, BN2=64), dict(BM1=32, BN1=32, BM2=32, BN2=32),
         dict(BM2=64, BN2=128), dict(NUM_STAGES=4)]
    if big:
        c += [dict(BM1=128, BN1=128, BM2=128, BN2=128, NUM_WARPS=8),
              dict(BM1=64, BN1=128, BM2=128, BN2=128, NUM_WARPS=8),
              dict(BM1=128, BN1=128, BK1=32, BM2=128, BN2=64, NUM_WARPS=4),
              dict(BM1=64, BN1=64, BM2=64, BN2=64, BK1=64, BK2=64, NUM_STAGES=2)]
    return c


def pc_cfgs(big):
    if SMOKE:
        return [{}, dict(BM=16, BN=16, BK=16), dict(ROWS_MAX_ROWS=1 << 30)]
    if big:  # B >= BIG_ROWS: the BIG_* tiles
        # 64 x 64 with 8 warps: the default tile without its spill (sm_90 compile, Triton 3.8: the
        # feedback kernel spills 168 bytes per thread with 4 warps at tf32, none with 8)
        return [{}, dict(BIG_BM=64, BIG_BN=64, NUM_WARPS=8), dict(ROWS_MAX_ROWS=1 << 30),
                dict(ROWS_MAX_ROWS=1 << 30, ROWS_BM=64, ROWS_BN=64, NUM_WARPS=8),
                dict(BIG_BM=128, BIG_BN=128, NUM_WARPS=8), dict(BIG_BM=128, BIG_BN=64),
                dict(BIG_BM=64, BIG_BN=128), dict(BIG_BM=128, BIG_BN=128, NUM_WARPS=4),
                dict(BIG_BM=64, BIG_BN=64, BK=64, NUM_STAGES=2), dict(BIG_BM=32, BIG_BN=32),
                dict(BIG_BM=128, BIG_BN=128, BK=64, NUM_WARPS=8, NUM_STAGES=2)]
    rows = 1 << 30  # the rows path (kernels/pc_relax.py _rows_kernel) for every batch
    return [{}, dict(ROWS_MAX_ROWS=rows), dict(ROWS_MAX_ROWS=rows, ROWS_BN=32),
            dict(ROWS_MAX_ROWS=rows, ROWS_BN=128, NUM_WARPS=8), dict(ROWS_MAX_ROWS=rows, ROWS_BM=32),
            dict(BM=16, BN=32, BK=32), dict(BM=32, BN=16), dict(BM=64, BN=32),
            dict(BM=32, BN=64), dict(BM=64, BN=64), dict(BK=64), dict(BM=16, BN=16, BK=64),
            dict(NUM_WARPS=2), dict(NUM_STAGES=2)]


def cublas_case(case, configs):
    """A hebb_case / swta_case with configs of its cuBLAS path (CUBLAS_MIN_MACS on; the first
    config, the defaults over TRITON_PATH, is the Triton path as the baseline). Not renamed for
    the precision: both thresholds are set."""
    return dict(case, configs=configs)


def hebb_cublas_cfgs():
    """The Triton path, then the cuBLAS path: the residual blocks (TRIL_FORM "blocks", the
    default) at TRIL_BLOCK 128 (the default), 64 and 256 units, and the row panels."""
    on = dict(CUBLAS_MIN_MACS=1, CUBLAS_MIN_MACS_TF32=1)
    return [{}, on] + [dict(on, TRIL_BLOCK=b) for b in (64, 256)] + [
        dict(on, TRIL_FORM="panels", TRIL_PANELS=p, TRIL_PANEL_MIN=16) for p in (1, 2)]


def swta_cublas_cfgs():
    on = dict(CUBLAS_MIN_MACS=1, CUBLAS_MIN_MACS_TF32=1)
    return [{}, on, dict(on, GATE_ROWS=1), dict(on, GATE_ROWS=8), dict(on, GATE_BN=1024),
            dict(on, DW_UNITS=8), dict(on, DW_UNITS=32, DW_BF=128)]


def pc_persistent_cfgs():
    """The persistent path (PERSISTENT_MAX_ROWS on) at several tiles; the first config (the
    module's defaults: the tile path) is the baseline."""
    on = dict(PERSISTENT_MAX_ROWS=1 << 30)
    if SMOKE:
        return [{}, on, dict(on, PERSISTENT_BM=16, PERSISTENT_BN=16)]
    return [{}, on, dict(on, PERSISTENT_BM=16, PERSISTENT_BN=32), dict(on, PERSISTENT_BM=32, PERSISTENT_BN=16),
            dict(on, PERSISTENT_BM=64, PERSISTENT_BN=32), dict(on, PERSISTENT_BM=32, PERSISTENT_BN=64),
            dict(on, PERSISTENT_BM=16, PERSISTENT_BN=64), dict(on, NUM_WARPS=8), dict(on, BK=64, NUM_STAGES=2),
            dict(on, NUM_WARPS=2)]


def pc_cublas_cfgs():
    """The cuBLAS path (CUBLAS_MIN_ROWS on) at several elementwise block sizes."""
    on = dict(CUBLAS_MIN_ROWS=1)
    if SMOKE:
        return [{}, on, dict(on, EW_BLOCK=256)]
    return [{}, on, dict(on, EW_BLOCK=512), dict(on, EW_BLOCK=2048), dict(on, EW_BLOCK=4096)]


def cases():
    if SMOKE:
        return [hebb_case("gha fp32 B9 20->24", 9, 20, 24, "gha", "fp32", hebb_cfgs(False)),
                swta_case("softwta fp32 B9 20->24", 9, 20, 24, "fp32", swta_cfgs(False)),
                cublas_case(hebb_case("gha cublas tf32 B9 20->70", 9, 20, 70, "gha", "tf32", []),
                            hebb_cublas_cfgs()),
                cublas_case(swta_case("softwta cublas fp32 B9 20->24", 9, 20, 24, "fp32", []),
                            swta_cublas_cfgs()),
                swta_case("softwta tf32x3 B9 20->24", 9, 20, 24, "tf32x3", swta_cfgs(False)),
                pc_case("pc fp32 20-37-16-10 B8 T3", (20, 37, 16, 10), 8, 3, "fp32", pc_cfgs(False)),
                pc_case("pc persistent fp32 20-37-16-10 B8 T3", (20, 37, 16, 10), 8, 3, "fp32",
                        pc_persistent_cfgs()),
                pc_case("pc cublas fp32 20-37-16-10 B8 T3", (20, 37, 16, 10), 8, 3, "fp32", pc_cublas_cfgs()),
                res_case("reservoir N45 B9 T4", 45, 9, 4, 5, res_cfgs()),
                ff_case("ff B5 13->37", 5, 13, 37, ff_cfgs())]
    net = (784, 1000, 500, 250, 10)
    return [
        # GHA's and SoftHebb's cuBLAS paths at B256 784->1024, their default since 2026-11-28
        # (0.082 / 0.051 ms in a graph against the 0.08 / 0.04 targets): TRIL_BLOCK, GATE_*, DW_*
        cublas_case(hebb_case("gha cublas fp32 B256 784->1024", 256, 784, 1024, "gha", "fp32", []),
                    hebb_cublas_cfgs()),
        cublas_case(swta_case("softwta cublas fp32 B256 784->1024", 256, 784, 1024, "fp32", []),
                    swta_cublas_cfgs()),
        # the persistent and cuBLAS paths of pc_relax (seventh session, no GPU timing yet)
        pc_case("pc persistent fp32 B256 T20", net, 256, 20, "fp32", pc_persistent_cfgs()),
        pc_case("pc persistent tf32x3 B256 T20", net, 256, 20, "tf32x3", pc_persistent_cfgs()),
        pc_case("pc cublas fp32 B4096 T20", net, 4096, 20, "fp32", pc_cublas_cfgs()),
        pc_case("pc cublas tf32 B4096 T20", net, 4096, 20, "tf32", pc_cublas_cfgs()),
        cublas_case(hebb_case("gha cublas tf32 B1024 4096->4096", 1024, 4096, 4096, "gha", "tf32", []),
                    hebb_cublas_cfgs()),
        cublas_case(swta_case("softwta cublas tf32 B1024 4096->4096", 1024, 4096, 4096, "tf32", []),
                    swta_cublas_cfgs()),
        # precision="tf32x3" (fp32-level accuracy on tensor cores) at the fp32 targets' shapes:
        # no tile has been timed for it yet (2026-11-27, third session without a sweep)
        hebb_case("gha tf32x3 B256 784->1024", 256, 784, 1024, "gha", "tf32x3", hebb_cfgs(False)),
        swta_case("softwta tf32x3 B256 784->1024", 256, 784, 1024, "tf32x3", swta_cfgs(False)),
        pc_case("pc tf32x3 B256 T20", net, 256, 20, "tf32x3", pc_cfgs(False)),
        pc_case("pc tf32x3 B4096 T20", net, 4096, 20, "tf32x3", pc_cfgs(True)),
        res_case("reservoir tf32x3 N2000 B256 T28", 2000, 256, 28, 28, res_cfgs(), "tf32x3"),
        # added after the first sweep (2026-11-27): the fp32 large shapes, the batched reservoir, ff
        hebb_case("gha fp32 B1024 4096->4096", 1024, 4096, 4096, "gha", "fp32", hebb_cfgs(True)),
        swta_case("softwta fp32 B1024 4096->4096", 1024, 4096, 4096, "fp32", swta_cfgs(True)),
        pc_case("pc fp32 B256 T100", net, 256, 100, "fp32", pc_cfgs(False)),
        res_case("reservoir N2000 B256 T28", 2000, 256, 28, 28, res_cfgs()),
        ff_case("ff B256 784->2000", 256, 784, 2000, ff_cfgs()),
        ff_case("ff B1024 2000->2000", 1024, 2000, 2000, ff_cfgs()),
        # the first sweep's cases (their winners are the defaults now)
        hebb_case("gha fp32 B256 784->1024", 256, 784, 1024, "gha", "fp32", hebb_cfgs(False)),
        hebb_case("gha tf32 B1024 4096->4096", 1024, 4096, 4096, "gha", "tf32", hebb_cfgs(True)),
        swta_case("softwta fp32 B256 784->1024", 256, 784, 1024, "fp32", swta_cfgs(False)),
        swta_case("softwta tf32 B1024 4096->4096", 1024, 4096, 4096, "tf32", swta_cfgs(True)),
        pc_case("pc fp32 B256 T20", net, 256, 20, "fp32", pc_cfgs(False)),
        pc_case("pc tf32 B4096 T20", net, 4096, 20, "tf32", pc_cfgs(True)),
        pc_case("pc fp32 B4096 T20", net, 4096, 20, "fp32", pc_cfgs(True)),
    ]


def sync():
    if DEV.type == "cuda":
        torch.cuda.synchronize()


def time_ms(fn, reps):
    if DEV.type != "cuda":
        t0 = time.perf_counter()
        fn()
        return 1e3 * (time.perf_counter() - t0)
    for _ in range(3):
        fn()
    sync()
    out = []
    for _ in range(reps):
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record()
        fn()
        b.record()
        b.synchronize()
        out.append(a.elapsed_time(b))
    return statistics.median(out)


def graphed(fn):
    if DEV.type != "cuda":
        return fn
    s = torch.cuda.Stream()
    s.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(s):
        fn()  # compile / warm outside the capture
    torch.cuda.current_stream().wait_stream(s)
    g = torch.cuda.CUDAGraph()
    with torch.cuda.graph(g):
        fn()
    return g.replay


# Path switches that send a call away from the fused Triton kernels (cuBLAS), set to "off" under
# every config unless the config sets them: the sweep times the tiles of the Triton path, and a
# config's defaults ({}) are that path, whatever the modules now pick by default. The ops' own
# graph caches of plain calls (GRAPH_MAX_MACS, GRAPH_MIN_STEPS) are off too: a sweep times the
# kernels.
TRITON_PATH = dict(CUBLAS_MIN_ROWS=0, CUBLAS_MIN_MACS=0, CUBLAS_MIN_MACS_TF32=0, BATCHED_GEMM="triton",
                   GRAPH_MAX_MACS=0, GRAPH_MIN_STEPS=0)


class _Config:
    """A config's tile constants set on its kernel module for a ``with`` block, over
    ``TRITON_PATH`` (the plan cache cleared on entry and exit, since plans hold the constants
    they were made with)."""

    def __init__(self, mod, cfg):
        self.mod = mod
        self.cfg = {k: v for k, v in TRITON_PATH.items() if hasattr(mod, k)}
        self.cfg.update(cfg)

    def _clear(self):
        if hasattr(self.mod, "_plans"):
            self.mod._plans.clear()

    def __enter__(self):
        self.saved = {k: getattr(self.mod, k) for k in self.cfg}
        for k, v in self.cfg.items():
            setattr(self.mod, k, v)
        self._clear()

    def __exit__(self, *exc):
        for k, v in self.saved.items():
            setattr(self.mod, k, v)
        self._clear()
        if DEV.type == "cuda":
            torch.cuda.empty_cache()


def describe(cfg):
    return " ".join(f"{k}={v}" for k, v in cfg.items()) or "defaults"


def warm(selected):
    """--warm-only: each (case, config) of this shard launched once (compiles its kernels)."""
    pairs = pick([(case, cfg) for case in selected for cfg in case["configs"]], ARGS.shard)
    print(f"warming {len(pairs)} (case, config) pairs", flush=True)
    t0, failed = time.perf_counter(), 0
    for i, (case, cfg) in enumerate(pairs):
        try:
            with _Config(case["module"], cfg):
                case["tri"]()
                sync()
            what = "ok"
        except Exception as exc:  # the sweep reports it properly
            failed += 1
            what = f"failed: {type(exc).__name__}: {str(exc)[:120]}"
        print(f"[{i + 1}/{len(pairs)} {time.perf_counter() - t0:5.1f}s] {case['label']} / "
              f"{describe(cfg)}: {what}", flush=True)
    return 1 if failed else 0


def main():
    selected = [case for case in cases() if not ARGS.only or ARGS.only in case["label"]]
    if ARGS.warm_only:
        return warm(selected)
    name = torch.cuda.get_device_name() if DEV.type == "cuda" else "CPU (interpreter)"
    import triton
    print(f"{name} | torch {torch.__version__} | triton {triton.__version__} | median of {ARGS.reps}",
          flush=True)
    out = w = None
    if ARGS.csv:
        out = open(ARGS.csv, "w", newline="")
        w = csv.writer(out)
        w.writerow(["case", "config", "rel_err", "ok", "ms"])
    for case in selected:
        print(f"\n== {case['label']}", flush=True)
        try:
            want = case["ref"]()
        except Exception as exc:
            print(f"  reference failed: {type(exc).__name__}: {exc}")
            continue
        best = None
        for cfg in case["configs"]:
            desc = describe(cfg)
            try:
                with _Config(case["module"], cfg):
                    got = case["tri"]()
                    err = float((got.double() - want.double()).norm() / want.double().norm())
                    ok = err <= case["tol"]
                    fn = case["timed"]()
                    ms = time_ms(graphed(fn) if case["graph"] else fn, ARGS.reps)
                print(f"  {desc:60s} rel err {err:.1e} {'ok' if ok else 'FAIL'}  {ms:8.3f} ms", flush=True)
                if w:
                    w.writerow([case["label"], desc, f"{err:.2e}", ok, f"{ms:.4f}"])
                    out.flush()
                if ok and (best is None or ms < best[1]):
                    best = (desc, ms)
            except Exception as exc:
                print(f"  {desc:60s} FAILED: {type(exc).__name__}: {str(exc)[:200]}", flush=True)
        if best:
            print(f"  best: {best[0]} ({best[1]:.3f} ms)", flush=True)
    if out:
        out.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
