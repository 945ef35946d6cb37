"""MNIST accuracy of the Hebbian MLP methods at precision="fp32" and precision="tf32".

Issue 3 asks that the tensor-core path (``precision="tf32"``) leave the MNIST accuracy of the
Hebbian learners unchanged. This script trains registered methods whose learner has a
``precision`` switch (by default ``hebbian-pca``, ``hebbian-wta``, ``softhebb``; also ``pc``,
``pc-adaptive``, ``ipc``, whose relaxation takes it) at both precisions on the same seed and
shuffle, and reports the test accuracy after the method's ``full_epochs``:

    python bench/gpu_accuracy.py                          # CUDA, Triton backend, full budgets
    python bench/gpu_accuracy.py --csv acc.csv            # also write one CSV row per run, as made
    python bench/gpu_accuracy.py --methods softhebb       # one method
    python bench/gpu_accuracy.py --smoke                  # CPU, 2000 samples: proves it runs
    python bench/gpu_accuracy.py --cpu                    # CPU, full budgets: tf32 emulated

On the CPU (``--cpu``) the backend is ``auto`` (C++ where built) and ``"tf32"`` is emulated by
rounding each GEMM operand as the GPU does (``bpalts/_precision.py``): the numerics of the
tensor-core path, without a GPU.

Each run goes through the harness's training loop (``bpalts.compare.run_one``: its shuffle, batch
size and widths ``layer_sizes(4)``), evaluated once at the end, so an fp32 run here repeats
``bpalts-compare --methods M --preset full`` for that method, up to the backend's float rounding.
"""
from __future__ import annotations

import argparse
import csv
import sys
import traceback

import torch

# The default set (issue 3's claim), in the order of what is still missing: hebbian-pca has no
# GPU figure, hebbian-wta only one on other widths; softhebb was measured on an H200 (2026-11-27).
METHODS = ("hebbian-pca", "hebbian-wta", "softhebb")
CHOICES = METHODS + ("pc", "pc-adaptive", "ipc")  # every method whose learner has a precision switch
FIELDS = ("method", "precision", "device", "backend", "epochs", "samples", "test_acc", "train_s")


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--methods", nargs="+", default=list(METHODS), choices=CHOICES)
    p.add_argument("--precisions", nargs="+", default=["fp32", "tf32"], choices=["fp32", "tf32", "tf32x3"])
    p.add_argument("--epochs", type=int, default=None, help="replace each method's full_epochs")
    p.add_argument("--max-samples", type=int, default=None, help="cap the training samples")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--csv", metavar="PATH", default=None)
    p.add_argument("--smoke", action="store_true",
                   help="CPU, reference backend, 1 epoch of 2000 samples (timings and accuracy "
                        "mean nothing)")
    p.add_argument("--cpu", action="store_true",
                   help="CPU, backend auto, full budgets (tf32 emulated by operand rounding)")
    return p.parse_args(argv)


class _LastRow:
    """The harness's writer interface; keeps the last evaluation row (this script writes its own
    CSV, with the precision)."""

    row: dict | None = None

    def write(self, row: dict) -> None:
        self.row = row


def run_one(spec, precision, epochs, backend, device, seed, x_tr, y_tr, x_te, y_te):
    """Train one learner through the harness's loop (``bpalts.compare.run_one``: its shuffle,
    batch size and widths ``layer_sizes(4)``), evaluated once at the end; returns
    (test accuracy, training seconds)."""
    from bpalts.compare import run_one as harness_run_one

    def set_precision(learner):
        if not hasattr(learner, "precision"):
            raise TypeError(f"{spec.name}: the learner has no precision switch")
        learner.precision = precision

    total = epochs * x_tr.shape[0]
    res = harness_run_one(spec, 4, (x_tr, y_tr, x_te, y_te), _LastRow(), total_samples=total,
                          eval_every=total, device=device, backend=backend, seed=seed,
                          progress=False, setup=set_precision)
    return res.final_accuracy, res.train_seconds


def main(argv=None) -> int:
    args = parse_args(argv)
    from bpalts import registry
    from bpalts.data import mnist

    smoke = args.smoke or (not torch.cuda.is_available() and not args.cpu)
    if smoke and not args.smoke:
        print("NOTICE: no CUDA: running the CPU smoke version (--cpu: full budgets on the CPU)",
              flush=True)
    device = torch.device("cpu") if smoke or args.cpu else torch.device("cuda")
    # "auto" picks Triton for CUDA tensors (a learner checks its backend name against CPU
    # tensors when it is built, before it is moved to the GPU), C++ for CPU tensors
    backend = "reference" if smoke else "auto"
    max_samples = 2000 if smoke and args.max_samples is None else args.max_samples
    torch.backends.cuda.matmul.allow_tf32 = False  # the readout and the reference stay fp32
    torch.backends.cudnn.allow_tf32 = False

    x_tr, y_tr = mnist("train", device=device)
    x_te, y_te = mnist("test", device=device)
    if max_samples is not None:
        x_tr, y_tr = x_tr[:max_samples], y_tr[:max_samples]
    name = torch.cuda.get_device_name() if device.type == "cuda" else "CPU"
    print(f"{name} | torch {torch.__version__} | backend {backend} | train {x_tr.shape[0]}",
          flush=True)

    out = None
    if args.csv:
        out = open(args.csv, "w", newline="")
        w = csv.DictWriter(out, FIELDS)
        w.writeheader()
        out.flush()
    rows, failed = [], 0
    for method in args.methods:
        spec = registry.get_method(method)
        epochs = 1 if smoke and args.epochs is None else (args.epochs or spec.full_epochs)
        for precision in args.precisions:
            try:
                acc, train_s = run_one(spec, precision, epochs, backend, device, args.seed,
                                       x_tr, y_tr, x_te, y_te)
            except Exception as exc:  # report and go on to the next run
                failed += 1
                print(f"{method:12s} {precision}: FAILED: {type(exc).__name__}: {exc}", flush=True)
                traceback.print_exc()
                continue
            n = x_tr.shape[0]
            row = dict(method=method, precision=precision, device=name, backend=backend,
                       epochs=epochs, samples=epochs * n, test_acc=f"{acc:.4f}",
                       train_s=f"{train_s:.1f}")
            rows.append(row)
            print(f"{method:12s} {precision}: test {100 * acc:.2f}%  ({epochs} epochs, "
                  f"{train_s:.1f} s)", flush=True)
            if out is not None:
                w.writerow(row)
                out.flush()
    if out is not None:
        out.close()
    print("\nmethod        " + "  ".join(f"{p:>8s}" for p in args.precisions))
    for method in args.methods:
        accs = {r["precision"]: r["test_acc"] for r in rows if r["method"] == method}
        print(f"{method:12s}  " + "  ".join(f"{100 * float(accs[p]):7.2f}%" if p in accs else "  failed"
                                            for p in args.precisions))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
