"""MNIST accuracy of the Hebbian MLP methods at precision="fp32" and precision="tf32".

Issue 3 asks that the tensor-core path (``precision="tf32"``) leave the MNIST accuracy of the
Hebbian learners unchanged. This script trains registered methods whose learner has a
``precision`` switch (by default ``softhebb``, ``hebbian-pca``, ``hebbian-wta``; also ``pc``,
``pc-adaptive``, ``ipc``, whose relaxation takes it) at both precisions on the same seed and
shuffle, and reports the test accuracy after the method's ``full_epochs``:

    python bench/gpu_accuracy.py                          # CUDA, Triton backend, full budgets
    python bench/gpu_accuracy.py --csv acc.csv            # also write one CSV row per run, as made
    python bench/gpu_accuracy.py --methods softhebb       # one method
    python bench/gpu_accuracy.py --smoke                  # CPU, 2000 samples: proves it runs

The shuffle is the harness's (``torch.randperm`` from a CPU generator seeded with ``--seed``, one
permutation per epoch, ``spec.batch_size``), and its widths (``layer_sizes(4)``), so an fp32 run
here repeats ``bpalts-compare --methods M --preset full`` for that method, up to the backend's
float rounding.
"""
from __future__ import annotations

import argparse
import csv
import sys
import time
import traceback

import torch

# The default set (issue 3's claim). pca comes before wta: pca has no GPU figure yet.
METHODS = ("softhebb", "hebbian-pca", "hebbian-wta")
CHOICES = METHODS + ("pc", "pc-adaptive", "ipc")  # every method whose learner has a precision switch
FIELDS = ("method", "precision", "device", "backend", "epochs", "samples", "test_acc", "train_s")


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--methods", nargs="+", default=list(METHODS), choices=CHOICES)
    p.add_argument("--precisions", nargs="+", default=["fp32", "tf32"], choices=["fp32", "tf32"])
    p.add_argument("--epochs", type=int, default=None, help="replace each method's full_epochs")
    p.add_argument("--max-samples", type=int, default=None, help="cap the training samples")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--csv", metavar="PATH", default=None)
    p.add_argument("--smoke", action="store_true",
                   help="CPU, reference backend, 1 epoch of 2000 samples (timings and accuracy "
                        "mean nothing)")
    return p.parse_args(argv)


def run_one(spec, precision, epochs, backend, device, seed, x_tr, y_tr, x_te, y_te):
    """Train one learner (the harness's shuffle) and return (test accuracy, training seconds)."""
    from bpalts.learners.widths import layer_sizes

    # the harness's default depth (4 weight layers: 784-861-645-484-10), as in the README's table
    learner = spec.build(layer_sizes(4), backend=backend, seed=seed)
    if not hasattr(learner, "precision"):
        raise TypeError(f"{spec.name}: the learner has no precision switch")
    learner.precision = precision
    learner.to(device)
    g = torch.Generator().manual_seed(seed)
    if device.type == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    n = x_tr.shape[0]
    for _ in range(epochs):
        perm = torch.randperm(n, generator=g).to(device)
        for i in range(0, n, spec.batch_size):
            idx = perm[i : i + spec.batch_size]
            learner.train_step(x_tr[idx], y_tr[idx])
    if device.type == "cuda":
        torch.cuda.synchronize()
    train_s = time.perf_counter() - t0
    with torch.no_grad():
        correct = sum(int((learner.predict(x_te[i : i + 2000]) == y_te[i : i + 2000]).sum())
                      for i in range(0, x_te.shape[0], 2000))
    return correct / x_te.shape[0], train_s


def main(argv=None) -> int:
    args = parse_args(argv)
    from bpalts import registry
    from bpalts.data import mnist

    smoke = args.smoke or not torch.cuda.is_available()
    if smoke and not args.smoke:
        print("NOTICE: no CUDA: running the CPU smoke version", flush=True)
    device = torch.device("cpu") if smoke else torch.device("cuda")
    # "auto" picks Triton for CUDA tensors (a learner checks its backend name against CPU
    # tensors when it is built, before it is moved to the GPU)
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
