"""The comparison harness: train registered methods on MNIST and record how they learn.

CLI ``bpalts-compare`` (or ``python -m bpalts.compare``)::

    bpalts-compare --list
    bpalts-compare                                  # quick preset, every method, 4 layers
    bpalts-compare --methods backprop --layers 2 4 8 --preset full --device cuda

For each selected (method, depth) it builds the learner from :mod:`bpalts.registry` with the
shared width rule (:func:`bpalts.learners.widths.layer_sizes`), trains it on shuffled MNIST in
batches of the method's ``batch_size`` and, at every evaluation point, appends one row to
``OUT/results.csv``::

    method, depth, epoch, samples_seen, train_seconds, test_accuracy, backend, device

``test_accuracy`` is a fraction (0..1) on the full 10k test set, ``epoch`` is
``samples_seen / n_train`` (fractional), ``train_seconds`` counts training only (the clock is read
around training segments, after a CUDA synchronize on the GPU; evaluation is excluded). Rows are
flushed as they are written, so an interrupted or failed run keeps what it had reached. Plots
(:mod:`bpalts.plots`) are redrawn from the CSV after every run: ``sample_efficiency.png``,
``clock_time.png`` and, when several depths are in the CSV, ``accuracy_vs_depth.png``.

Budgets: the ``quick`` preset trains every method on :data:`QUICK_SAMPLES` samples and evaluates
every :data:`QUICK_EVAL_EVERY`; the ``full`` preset trains each method for its
``spec.full_epochs`` epochs and evaluates once per epoch. ``--epochs`` replaces either budget with
that many epochs; ``--max-samples`` caps it; ``--eval-every`` sets the evaluation spacing.

A run whose learner raises (e.g. :class:`bpalts.learners.base.DivergenceError`) is reported, its
rows so far are kept, nothing is recorded for the failure itself, and the other runs go on; the
exit status is then 1. When MNIST cannot be loaded (:class:`bpalts.data.MNISTUnavailableError`)
the CLI prints why (the routes tried, where to put the files) and exits with status 1.

Programmatic use: :func:`compare` (returns a list of :class:`RunResult`), :func:`run_one`,
:func:`load_data` (the one place data is loaded; tests replace it).
"""
from __future__ import annotations

import argparse
import csv
import os
import sys
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Sequence

import torch
from torch import nn

from bpalts import registry
from bpalts._backend import resolve_backend
from bpalts._checks import check_choice, check_cuda_available, check_int
from bpalts.plots import COLUMNS, PLOT_FILES  # PLOT_FILES: what overwrite removes
from bpalts.learners.base import SEED_MAX, check_seed
from bpalts.learners.widths import layer_sizes

#: Training samples per method in the ``quick`` preset (a fixed budget: the whole quick comparison
#: of every registered method must stay within minutes on a 2-core CPU, so as methods are added
#: this shrinks rather than the list of methods).
QUICK_SAMPLES = 6_000
#: Evaluation spacing (training samples) in the ``quick`` preset.
QUICK_EVAL_EVERY = 6_000  # one evaluation: evaluating the conv net on 10k images costs ~35 s
DEFAULT_LAYERS = 4
DEFAULT_OUT = "runs/compare"
CSV_NAME = "results.csv"
CSV_COLUMNS = list(COLUMNS)  # one definition, in bpalts.plots (which reads the CSV back)
PRESETS = ("quick", "full")
BACKENDS = ("auto", "reference", "triton", "cpp")
DEVICES = ("auto", "cpu", "cuda")


@dataclass
class RunResult:
    """Outcome of one (method, depth) run. ``error`` is set (and ``ok`` false) if it failed."""

    method: str
    depth: int
    samples_seen: int = 0
    train_seconds: float = 0.0
    final_accuracy: float | None = None
    backend: str = ""
    device: str = ""
    evals: int = 0
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None


# --------------------------------------------------------------------------------------------
# data, device, budget


def load_data(device: torch.device | str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(x_train, y_train, x_test, y_test)`` of MNIST on ``device`` (float32 (N, 784) in [0, 1],
    int64 labels). The harness loads data only through this function."""
    from bpalts.data import mnist  # imported here so that the harness imports without it

    x_train, y_train = mnist("train", device=device)
    x_test, y_test = mnist("test", device=device)
    return x_train, y_train, x_test, y_test


def resolve_device(name: str) -> torch.device:
    """``auto`` -> ``cuda`` when available else ``cpu``; ``cuda`` without CUDA is an error."""
    if not isinstance(name, str):
        raise TypeError(f"device must be a string, one of {DEVICES} (or 'cuda:N'), got {type(name).__name__}")
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(name)
    except RuntimeError:
        dev = None
    if dev is None or dev.type not in ("cpu", "cuda"):
        raise ValueError(f"device must be one of {DEVICES} (or 'cuda:N'), got {name!r}")
    check_cuda_available("device", dev)
    return dev


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def training_budget(
    spec: registry.MethodSpec,
    n_train: int,
    *,
    preset: str = "quick",
    epochs: int | None = None,
    max_samples: int | None = None,
    eval_every: int | None = None,
) -> tuple[int, int]:
    """``(total_samples, eval_every)`` for ``spec`` under the given preset and overrides
    (``epochs``, ``max_samples``, ``eval_every``: ints >= 1, or None)."""
    check_budget(preset=preset, epochs=epochs, max_samples=max_samples, eval_every=eval_every)
    if epochs is not None:
        total = int(epochs) * n_train
    elif preset == "quick":
        total = QUICK_SAMPLES
    else:
        total = int(spec.full_epochs) * n_train
    if max_samples is not None:
        total = min(total, int(max_samples))
    if eval_every is None:
        eval_every = QUICK_EVAL_EVERY if preset == "quick" else n_train
    total = max(1, total)
    return total, max(1, int(eval_every))


def check_budget(*, preset: str = "quick", epochs=None, max_samples=None, eval_every=None) -> None:
    """The budget options :func:`compare` takes, checked as the CLI checks them: ``preset`` one of
    :data:`PRESETS`; ``epochs``, ``max_samples``, ``eval_every`` ints >= 1 or None."""
    check_choice("preset", preset, PRESETS)
    for name, value in (("epochs", epochs), ("max_samples", max_samples), ("eval_every", eval_every)):
        if value is not None:
            check_int(name, value, 1)


# --------------------------------------------------------------------------------------------
# CSV


def check_results_csv(path: str | os.PathLike) -> None:
    """``path`` can be appended to: absent, empty, or a regular file whose header is
    :data:`CSV_COLUMNS` (rows with other columns would break :mod:`bpalts.plots`); else a
    ValueError naming the file and the expected header."""
    path = Path(path)
    if not path.exists():
        return
    if not path.is_file():
        raise ValueError(f"{path} exists but is not a regular file; it cannot hold the results")
    try:
        with open(path, newline="") as f:
            header = next(csv.reader(f), None)
    except (OSError, UnicodeDecodeError) as exc:
        raise ValueError(f"cannot read the existing results file {path}: {exc}") from None
    if header is not None and header != CSV_COLUMNS:
        raise ValueError(
            f"{path} has the header {','.join(header)!r}, not the expected "
            f"{','.join(CSV_COLUMNS)!r}: new rows cannot be appended to it. Choose another "
            f"output folder or pass --overwrite (overwrite=True) to replace the file")


def prepare_out(out: str | os.PathLike, overwrite: bool = False) -> Path:
    """Check the output folder ``out`` and its ``results.csv`` (see :func:`check_results_csv`)
    and create the folder; returns the CSV's path. Problems are ValueErrors that name the path."""
    if not isinstance(out, (str, os.PathLike)):
        raise TypeError(f"out must be a folder path (str or os.PathLike), got {type(out).__name__} {out!r}")
    if os.fspath(out) in ("", b""):  # Path("") is ".": an empty --out would write into the cwd
        raise ValueError(f"out must name a folder, got an empty path {os.fspath(out)!r} "
                         "(for the current folder, pass '.')")
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise ValueError(f"output folder {out} exists and is not a folder")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ValueError(f"cannot create the output folder {out}: {exc.strerror or exc}") from None
    if not os.access(out, os.W_OK | os.X_OK):
        raise ValueError(f"output folder {out} is not writable")
    csv_path = out / CSV_NAME
    if csv_path.exists() and not csv_path.is_file():
        raise ValueError(f"{csv_path} exists but is not a regular file; it cannot hold the results")
    if not overwrite:
        check_results_csv(csv_path)
    return csv_path


class ResultsWriter:
    """Appends rows to ``results.csv``, writing the header when the file is new or empty, and
    flushing after every row. A file with another header is refused
    (:func:`check_results_csv`); one whose last line lacks its line terminator (edited by hand)
    gets one before the first new row."""

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        check_results_csv(self.path)
        new = not self.path.exists() or self.path.stat().st_size == 0
        ends_open = False  # the file's last line has no line terminator (e.g. edited by hand)
        if not new:
            with open(self.path, "rb") as f:
                f.seek(-1, os.SEEK_END)
                ends_open = f.read(1) not in (b"\n", b"\r")
        self._file = open(self.path, "a", newline="")
        self._writer = csv.DictWriter(self._file, fieldnames=CSV_COLUMNS)
        if ends_open:  # end that line first, or the next row would be glued onto it
            self._file.write("\r\n")  # the csv module's line terminator
            self._file.flush()
        if new:
            self._writer.writeheader()
            self._file.flush()

    def write(self, row: dict) -> None:
        self._writer.writerow({k: row[k] for k in CSV_COLUMNS})
        self._file.flush()

    def close(self) -> None:
        if not self._file.closed:
            self._file.close()

    def __enter__(self) -> "ResultsWriter":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


# --------------------------------------------------------------------------------------------
# one run


def _evaluate(learner, x: torch.Tensor, y: torch.Tensor) -> float:
    if hasattr(learner, "evaluate"):
        return float(learner.evaluate(x, y))
    with torch.no_grad():  # a learner outside the Learner base class: predict in batches
        correct = 0
        for i in range(0, x.shape[0], 2000):
            correct += (learner.predict(x[i : i + 2000]) == y[i : i + 2000]).sum().item()
    return correct / max(1, x.shape[0])


def _backend_name(learner, requested: str) -> str:
    actual = getattr(learner, "backend", None)
    return requested if actual is None or callable(actual) else str(actual)


def run_one(
    spec: registry.MethodSpec,
    depth: int,
    data: Sequence[torch.Tensor],
    writer: ResultsWriter,
    *,
    total_samples: int,
    eval_every: int,
    device: torch.device,
    backend: str = "auto",
    seed: int = 0,
    progress: bool = True,
    setup: Callable[[nn.Module], None] | None = None,
    result: RunResult | None = None,
) -> RunResult:
    """Train ``spec`` at ``depth`` weight layers on ``data`` for ``total_samples`` samples,
    appending a CSV row at every evaluation point (every ``eval_every`` samples, and at the end).
    Returns ``result`` (a new :class:`RunResult` if none is given), which is filled in as the run
    goes: after a failure the caller's object still says what the run reached (samples, training
    time, the last accuracy, the backend).

    ``writer`` is anything with ``write(row: dict)`` (a :class:`ResultsWriter` for the CSV).
    ``setup(learner)``, if given, runs on the freshly built learner before it moves to ``device``
    (e.g. ``bench/gpu_accuracy.py`` sets its ``precision`` there).

    Raises whatever the learner raises; the rows written before stay in the CSV.
    """
    from tqdm.auto import tqdm

    total_samples = check_int("total_samples", total_samples, 1)
    eval_every = check_int("eval_every", eval_every, 1)
    x_train, y_train, x_test, y_test = (t.to(device) for t in data)
    n_train = x_train.shape[0]
    if n_train == 0:
        raise ValueError("the training set is empty")
    if result is None:
        result = RunResult(method=spec.name, depth=depth, backend=backend, device=str(device))

    torch.manual_seed(seed)
    learner = spec.build(layer_sizes(depth), backend=backend, seed=seed)
    if setup is not None:
        setup(learner)
    learner = learner.to(device)
    learner.train()
    result.backend = _backend_name(learner, backend)
    gen = torch.Generator().manual_seed(seed)
    batch_size = max(1, int(spec.batch_size))

    bar = tqdm(total=total_samples, desc=f"{spec.name} L{depth}", unit="sample",
               disable=not progress, leave=True, dynamic_ncols=True)
    try:
        seen = 0
        next_eval = eval_every
        perm = None
        pos = n_train  # position in the current epoch's permutation
        while seen < total_samples:
            # One training segment: up to the next evaluation point (or the end of the budget).
            _sync(device)
            t0 = time.perf_counter()
            while seen < total_samples and seen < next_eval:
                if pos >= n_train:
                    perm = torch.randperm(n_train, generator=gen).to(device)
                    pos = 0
                n = min(batch_size, n_train - pos, total_samples - seen)
                idx = perm[pos : pos + n]
                learner.train_step(x_train[idx], y_train[idx])
                pos += n
                seen += n
                bar.update(n)
            _sync(device)
            result.train_seconds += time.perf_counter() - t0
            result.samples_seen = seen

            acc = _evaluate(learner, x_test, y_test)
            learner.train()
            while next_eval <= seen:
                next_eval += eval_every
            writer.write(
                {
                    "method": spec.name,
                    "depth": depth,
                    "epoch": round(seen / n_train, 6),
                    "samples_seen": seen,
                    "train_seconds": round(result.train_seconds, 6),
                    "test_accuracy": round(acc, 6),
                    "backend": result.backend,
                    "device": result.device,
                }
            )
            result.final_accuracy = acc
            result.evals += 1
            bar.set_postfix(acc=f"{100 * acc:.2f}%", refresh=False)
    finally:
        bar.close()
    return result


# --------------------------------------------------------------------------------------------
# the whole comparison


def _select_methods(names: Sequence[str] | None) -> list[registry.MethodSpec]:
    registered = registry.method_names()
    if not names:
        return [registry.get_method(n) for n in registered]
    unknown = [n for n in names if n not in registered]
    if unknown:
        raise ValueError(
            f"unknown method{'s' if len(unknown) > 1 else ''} {', '.join(map(repr, unknown))}; "
            f"registered methods: {', '.join(registered) or '(none)'}"
        )
    seen: dict[str, None] = {}
    for n in names:
        seen.setdefault(n)
    return [registry.get_method(n) for n in seen]


def compare(
    methods: Sequence[str] | None = None,
    layers: Sequence[int] = (DEFAULT_LAYERS,),
    *,
    preset: str = "quick",
    epochs: int | None = None,
    device: str = "auto",
    backend: str = "auto",
    out: str | os.PathLike = DEFAULT_OUT,
    eval_every: int | None = None,
    max_samples: int | None = None,
    seed: int = 0,
    progress: bool = True,
    plots: bool = True,
    overwrite: bool = False,
    log=None,
) -> list[RunResult]:
    """Run every selected (method, depth), appending to ``out/results.csv`` and redrawing the
    plots after each run. Methods with ``fixed_depth`` run once (at the first depth given).
    ``overwrite`` starts a fresh ``results.csv``: once the data has loaded, the old one and the
    plots drawn from it (:data:`PLOT_FILES`) are removed.

    Failed runs are returned with ``error`` set; a ``KeyboardInterrupt`` stops the remaining runs
    (after the plots are drawn) and is re-raised.

    Every option is checked (as the CLI checks it) before any data is loaded or file written:
    a bad option, a depth below a method's ``min_depth``, an unavailable device or backend, or an
    output folder / ``results.csv`` that cannot be used (one with another header, unless
    ``overwrite``) raises ``ValueError`` or ``TypeError``.
    """
    log = log or (lambda msg: print(msg, file=sys.stderr, flush=True))
    runs, dev = _check_options(methods, layers, preset=preset, epochs=epochs, device=device,
                               backend=backend, eval_every=eval_every, max_samples=max_samples,
                               seed=seed)
    csv_path = prepare_out(out, overwrite)
    out = csv_path.parent

    data = tuple(t.to(dev) for t in load_data(dev))
    n_train = data[0].shape[0]
    if overwrite:  # only once the data is there: a failed load must not lose the old results
        # the old plots go too, or one this run does not redraw (accuracy_vs_depth.png after a
        # single-depth run, any plot after a run that fails before its first row) would still
        # show the replaced results
        for path in (csv_path, *(out / name for name in PLOT_FILES)):
            if path.is_file():
                path.unlink()

    results: list[RunResult] = []
    with ResultsWriter(csv_path) as writer:
        try:
            for spec, d in runs:
                total, every = training_budget(
                    spec, n_train, preset=preset, epochs=epochs, max_samples=max_samples,
                    eval_every=eval_every,
                )
                res = RunResult(spec.name, d, backend=backend, device=str(dev))
                try:  # run_one fills res as it goes: a failed run's line says what it reached
                    run_one(
                        spec, d, data, writer, total_samples=total, eval_every=every,
                        device=dev, backend=backend, seed=seed, progress=progress, result=res,
                    )
                except KeyboardInterrupt:
                    log(f"interrupted: {spec.name} at {d} layers; rows written so far are kept")
                    res.error = "interrupted"
                    results.append(res)
                    raise
                except Exception as exc:  # noqa: BLE001 - report and go on with the other runs
                    msg = f"{type(exc).__name__}: {exc}"
                    log(f"FAILED {spec.name} at {d} layers: {msg}")
                    log("".join(traceback.format_exception(exc)).rstrip())
                    res.error = msg
                results.append(res)
                if plots:
                    _draw(csv_path, out, log)
        except KeyboardInterrupt:
            writer.close()
            if plots:
                _draw(csv_path, out, log)
            raise
    return results


def _check_options(methods, layers, *, preset, epochs, device, backend, eval_every, max_samples,
                   seed) -> tuple[list[tuple[registry.MethodSpec, int]], torch.device]:
    """Validate :func:`compare`'s options; returns its (spec, depth) runs and the device."""
    check_budget(preset=preset, epochs=epochs, max_samples=max_samples, eval_every=eval_every)
    check_seed(seed)
    if isinstance(methods, str):
        methods = [methods]
    elif methods is not None:
        if isinstance(methods, (bytes, dict)) or not isinstance(methods, Iterable):
            raise TypeError(f"methods must be a list of method names or None (every method), got {methods!r}")
        methods = list(methods)
        if not methods:
            raise ValueError("methods must name at least one method (None runs every method), got []")
        bad = [m for m in methods if not isinstance(m, str)]
        if bad:
            raise TypeError(f"methods must hold method names (str), got {bad[0]!r}")
    specs = _select_methods(methods)
    if isinstance(layers, (str, bytes)) or not isinstance(layers, Iterable):
        raise TypeError(f"layers must be a sequence of depths (weight layers), e.g. [4], got {layers!r}")
    layers = list(dict.fromkeys(check_int("layers", d, 1, what="weight layers") for d in layers))
    if not layers:
        raise ValueError("layers must name at least one depth")
    for d in layers:
        layer_sizes(d)  # validates the depth before anything trains
    runs = []
    too_shallow = []
    for spec in specs:
        for d in (layers[:1] if spec.fixed_depth else layers):
            if d < spec.min_depth:
                too_shallow.append(f"{spec.name} needs at least {spec.min_depth} weight layers (got {d})")
            runs.append((spec, d))
    if too_shallow:
        raise ValueError("depth too small: " + "; ".join(too_shallow)
                         + ". Leave these methods out or ask for deeper networks (--layers)")
    dev = resolve_device(device)
    resolve_backend(backend, dev)  # a backend that cannot run on this device fails here, not per run
    return runs, dev


def _draw(csv_path: Path, out: Path, log) -> list[Path]:
    from bpalts import plots

    try:
        if not csv_path.exists():
            return []
        df = plots.load_results(csv_path)
        if df.empty:
            return []
        return plots.plot_all(df, out)
    except Exception as exc:  # noqa: BLE001 - a plotting problem must not lose a long run
        log(f"could not draw the plots: {type(exc).__name__}: {exc}")
        return []


def format_summary(results: Sequence[RunResult]) -> str:
    """A plain-text table: method, depth, final accuracy %, train seconds, samples, status."""
    header = ("method", "depth", "accuracy %", "train s", "samples", "backend", "status")
    rows = []
    for r in results:
        acc = "-" if r.final_accuracy is None else f"{100 * r.final_accuracy:.2f}"
        err = r.error if r.error is None or len(r.error) <= 70 else r.error[:67] + "..."
        status = "ok" if r.ok else f"FAILED ({err})"
        rows.append((r.method, str(r.depth), acc, f"{r.train_seconds:.1f}", str(r.samples_seen),
                     r.backend, status))
    widths = [max(len(h), *(len(row[i]) for row in rows)) if rows else len(h)
              for i, h in enumerate(header)]
    right = {1, 2, 3, 4}

    def fmt(row):
        cells = [c.rjust(w) if i in right else c.ljust(w)
                 for i, (c, w) in enumerate(zip(row, widths))]
        return "  ".join(cells).rstrip()

    lines = [fmt(header), fmt(tuple("-" * w for w in widths))]
    lines += [fmt(row) for row in rows]
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------
# CLI


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return value


def _seed(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer seed, got {text!r}") from None
    if not 0 <= value <= SEED_MAX:
        raise argparse.ArgumentTypeError(f"expected a seed in 0..{SEED_MAX}, got {value}")
    return value


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="bpalts-compare",
        description="Train registered learning rules on MNIST; record test accuracy against "
        "samples seen and training time to OUT/results.csv and plot it.",
    )
    p.add_argument("--list", action="store_true", help="list the registered methods and exit")
    p.add_argument("--methods", nargs="+", metavar="NAME",
                   help="methods to run (default: every registered method)")
    p.add_argument("--layers", nargs="+", type=_positive_int, metavar="N",
                   help=f"depths in weight layers (default: {DEFAULT_LAYERS})")
    p.add_argument("--preset", choices=PRESETS, default="quick",
                   help=f"quick: {QUICK_SAMPLES} samples per run, eval every {QUICK_EVAL_EVERY}; "
                   "full: each method's full_epochs, eval every epoch (default: quick)")
    p.add_argument("--epochs", type=_positive_int,
                   help="train this many epochs (replaces the preset's budget)")
    p.add_argument("--max-samples", type=_positive_int, metavar="N",
                   help="cap the training samples per run")
    p.add_argument("--eval-every", type=_positive_int, metavar="SAMPLES",
                   help="evaluate every SAMPLES training samples")
    p.add_argument("--device", choices=DEVICES, default="auto", help="default: auto")
    p.add_argument("--backend", choices=BACKENDS, default="auto", help="default: auto")
    p.add_argument("--out", default=DEFAULT_OUT, metavar="DIR",
                   help=f"output folder (default: {DEFAULT_OUT})")
    p.add_argument("--seed", type=_seed, default=0, help=f"0..{SEED_MAX} (default: 0)")
    p.add_argument("--overwrite", action="store_true",
                   help="start a fresh results.csv instead of appending to it")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.add_argument("--no-plots", action="store_true", help="do not draw the plots")
    return p


def list_methods() -> str:
    names = registry.method_names()
    if not names:
        return "(no methods registered)"
    width = max(len(n) for n in names)
    lines = []
    for n in names:
        spec = registry.get_method(n)
        epochs = "epoch" if spec.full_epochs == 1 else "epochs"
        extra = f"batch {spec.batch_size}, {spec.full_epochs} {epochs} (full)"
        if spec.fixed_depth:
            extra += ", fixed depth"
        lines.append(f"{n.ljust(width)}  {spec.description}  [{extra}]")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    from bpalts.data import MNISTChecksumError, MNISTUnavailableError

    parser = build_parser()
    args = parser.parse_args(argv)
    if args.list:
        print(list_methods())
        return 0
    # Every option, the output folder included, is checked before any data is loaded.
    try:
        _check_options(args.methods, args.layers or [DEFAULT_LAYERS], preset=args.preset,
                       epochs=args.epochs, device=args.device, backend=args.backend,
                       eval_every=args.eval_every, max_samples=args.max_samples, seed=args.seed)
        prepare_out(args.out, args.overwrite)
    except (TypeError, ValueError) as exc:
        parser.error(str(exc))
    try:
        results = compare(
            args.methods,
            args.layers or [DEFAULT_LAYERS],
            preset=args.preset,
            epochs=args.epochs,
            device=args.device,
            backend=args.backend,
            out=args.out,
            eval_every=args.eval_every,
            max_samples=args.max_samples,
            seed=args.seed,
            progress=not args.no_progress,
            plots=not args.no_plots,
            overwrite=args.overwrite,
        )
    except KeyboardInterrupt:
        print("interrupted; rows written so far are in "
              f"{Path(args.out) / CSV_NAME}", file=sys.stderr)
        return 130
    except ValueError as exc:  # bad depth, unavailable device, ...
        print(f"bpalts-compare: error: {exc}", file=sys.stderr)
        return 2
    except (MNISTUnavailableError, MNISTChecksumError) as exc:  # no data: say why, no traceback
        print(f"bpalts-compare: error: {exc}", file=sys.stderr)
        return 1
    print(format_summary(results))
    print(f"results: {Path(args.out) / CSV_NAME}")
    failed = [r for r in results if not r.ok]
    if failed:
        print(f"{len(failed)} of {len(results)} runs failed", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
