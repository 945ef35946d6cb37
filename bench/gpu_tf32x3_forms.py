"""3xTF32 through cuBLAS: how accurate and how fast is each way of laying it out? (GPU)

    python bench/gpu_tf32x3_forms.py [--csv PATH] [--reps N]

Why: on an H200 (2026-11-28) the ops' cuBLAS form of tf32x3, ONE TF32 GEMM of split operands
with K tripled (``[a_hi, a_lo, a_hi] [b_hi; b_hi; b_lo]``, ``kernels/_split_tf32.py``), was
1.2-2.4x faster than Triton's ``tl.dot`` tf32x3 but 10-108x further from a float64 run than
fp32 (bench/results/2026-11-28-h200), where the CPU emulation had predicted parity. This script
times and measures, on the GEMM alone, each form against a float64 product:

- ``fp32``: cuBLAS float32 (TF32 off); ``tf32``: one TF32 GEMM of the unsplit operands;
- ``kcat``: the ops' form, one TF32 GEMM with K tripled, the large ``hi hi`` terms first;
- ``kcat-small-first``: the same with the two small terms first, ``[a_lo, a_hi, a_hi]
  [b_hi; b_lo; b_hi]``;
- ``two-gemms``: the small terms as one TF32 GEMM with K doubled, ``[a_lo, a_hi] [b_hi; b_lo]``,
  the large one as another, summed in float32 (what a fused elementwise pass could read);
- ``three-gemms``: each term its own TF32 GEMM, small ones first, summed in float32.

Inputs: ``a`` uniform in [-1, 1] (tanh-like states), ``b`` Gaussian / sqrt(K); shapes of the
reservoir step (B256, N2000), SoftHebb's forward (B256 784->1024) and the large Hebbian shape
(B1024 4096->4096). Error: ``||C - C64|| / ||C64||`` (Frobenius). On the CPU it runs with TF32
emulated by rounding the operands (``bpalts._precision``), so only a GPU answers the question.
"""
from __future__ import annotations

import argparse
import csv
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bpalts._precision import cuda_matmul_precision, round_tf32  # noqa: E402

SHAPES = [("reservoir B256 N2000", 256, 2000, 2000), ("softwta B256 784->1024", 256, 784, 1024),
          ("hebbian B1024 4096->4096", 1024, 4096, 4096)]


def split(v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    hi = round_tf32(v)
    return hi, round_tf32(v - hi)


def mm(a: torch.Tensor, b: torch.Tensor, precision: str) -> torch.Tensor:
    """``a @ b.T`` by cuBLAS at precision ("fp32" / "tf32"); on the CPU tf32 is emulated."""
    if a.is_cuda:
        with cuda_matmul_precision(precision):
            return a @ b.t()
    if precision == "tf32":
        return round_tf32(a) @ round_tf32(b).t()
    return a @ b.t()


def forms(a: torch.Tensor, b: torch.Tensor) -> dict:
    """Each form as a zero-argument callable giving ``a @ b.T`` (operands split beforehand: the
    ops split once per call, so the split is not what is timed)."""
    ah, al = split(a)
    bh, bl = split(b)
    kcat_a, kcat_b = torch.cat([ah, al, ah], 1), torch.cat([bh, bh, bl], 1)
    small_a, small_b = torch.cat([al, ah, ah], 1), torch.cat([bh, bl, bh], 1)
    two_a, two_b = torch.cat([al, ah], 1), torch.cat([bh, bl], 1)
    return {
        "fp32": lambda: mm(a, b, "fp32"),
        "tf32": lambda: mm(a, b, "tf32"),
        "kcat": lambda: mm(kcat_a, kcat_b, "tf32"),
        "kcat-small-first": lambda: mm(small_a, small_b, "tf32"),
        "two-gemms": lambda: mm(two_a, two_b, "tf32") + mm(ah, bh, "tf32"),
        "three-gemms": lambda: (mm(al, bh, "tf32") + mm(ah, bl, "tf32")) + mm(ah, bh, "tf32"),
    }


def timed(fn, reps: int) -> float:
    """Median ms per call (CUDA events on a GPU, perf_counter on the CPU)."""
    for _ in range(3):
        fn()
    times = []
    for _ in range(reps):
        if torch.cuda.is_available():
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            torch.cuda.synchronize()
            times.append(start.elapsed_time(end))
        else:
            t0 = time.perf_counter()
            fn()
            times.append((time.perf_counter() - t0) * 1e3)
    return sorted(times)[len(times) // 2]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--csv", type=Path, help="write the rows here as they are measured")
    ap.add_argument("--reps", type=int, default=20)
    ap.add_argument("--small", action="store_true", help="tiny shapes (a CPU check of the script)")
    args = ap.parse_args(argv)
    dev = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    name = torch.cuda.get_device_name() if dev.type == "cuda" else "CPU (TF32 emulated)"
    print(f"{name} | torch {torch.__version__}", flush=True)
    shapes = [("small B5 37->29", 5, 37, 29)] if args.small else SHAPES
    out = None
    if args.csv:
        out = csv.writer(args.csv.open("w", newline=""))
        out.writerow(["device", "shape", "form", "rel err vs float64", "ms"])
    g = torch.Generator(device="cpu").manual_seed(0)
    for label, B, K, N in shapes:
        a = (torch.rand(B, K, generator=g) * 2 - 1).to(dev)
        b = (torch.randn(N, K, generator=g) / K ** 0.5).to(dev)
        ref = a.double() @ b.double().t()
        print(f"\n== {label} (M {B}, K {K}, N {N})", flush=True)
        for form, fn in forms(a, b).items():
            c = fn()
            err = float((c.double() - ref).norm() / ref.norm())
            ms = timed(fn, args.reps)
            print(f"  {form:18s} rel err {err:8.1e}   {ms:8.3f} ms", flush=True)
            if out:
                out.writerow([name, label, form, f"{err:.2e}", f"{ms:.4f}"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
