"""Plots of the comparison harness's results (``bpalts-compare``, DESIGN.md section 5).

Every function takes the results as a pandas ``DataFrame`` or the path of the CSV that
:mod:`bpalts.compare` writes (columns ``method, depth, epoch, samples_seen, train_seconds,
test_accuracy, backend, device``; ``test_accuracy`` is a fraction in 0..1, plotted in %) and an
output path, and returns the path written (``None`` where there is nothing to draw).

- :func:`plot_sample_efficiency`: test accuracy (%) against training samples seen.
- :func:`plot_clock_time`: test accuracy (%) against training seconds (evaluation excluded).
- :func:`plot_accuracy_vs_depth`: final test accuracy (%) of each method against depth.
- :func:`plot_all`: the three above into one folder (the depth plot only when several depths ran).

The CSV is appended to across invocations, so it can hold several runs of the same method,
depth, backend and device; :func:`load_results` keeps the latest of them (a run starts again
where ``samples_seen`` stops increasing; the columns carry nothing else to tell runs apart, so a
later run whose first evaluation comes after the earlier run's last one, e.g. a longer budget
with another seed, continues its curve: give such runs another ``--out``, or ``--overwrite``). Figures are drawn with matplotlib's Agg canvas directly
(no pyplot, no global backend switch) and written atomically (temporary file, then rename).
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Union

import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

COLUMNS = [
    "method",
    "depth",
    "epoch",
    "samples_seen",
    "train_seconds",
    "test_accuracy",
    "backend",
    "device",
]
RUN_KEY = ["method", "depth", "backend", "device"]

Results = Union[pd.DataFrame, str, os.PathLike]


def load_results(results: Results, latest_only: bool = True) -> pd.DataFrame:
    """The results as a DataFrame with a ``run`` column numbering the runs of each key.

    ``results`` is a DataFrame or a CSV path. With ``latest_only`` only the last run of each
    ``(method, depth, backend, device)`` is kept. Missing columns raise ``ValueError``.
    """
    if isinstance(results, pd.DataFrame):
        df = results.copy()
    else:
        df = pd.read_csv(results)
    missing = [c for c in COLUMNS if c not in df.columns]
    if missing:
        raise ValueError(f"results lack the columns {missing}; expected {COLUMNS}")
    df = df.reset_index(drop=True)
    if df.empty:
        df["run"] = pd.Series(dtype="int64")
        return df
    df["method"] = df["method"].astype(str)
    df["backend"] = df["backend"].astype(str)
    df["device"] = df["device"].astype(str)
    df["depth"] = df["depth"].astype(int)
    # Number the runs within each key, in file order: a new run begins where samples_seen does
    # not increase over the previous row of the same key.
    run = pd.Series(0, index=df.index, dtype="int64")
    for _, idx in df.groupby(RUN_KEY, sort=False).groups.items():
        seen = df.loc[idx, "samples_seen"].to_numpy()
        count, prev = 0, None
        for i, s in zip(idx, seen):
            if prev is not None and s <= prev:
                count += 1
            run[i] = count
            prev = s
    df["run"] = run
    if latest_only:
        last = df.groupby(RUN_KEY, sort=False)["run"].transform("max")
        df = df[df["run"] == last].reset_index(drop=True)
    return df


def _labels(df: pd.DataFrame, with_depth: bool | None = None) -> dict[tuple, str]:
    """A legend label per run key: the method, plus depth / backend / device where they vary."""
    keys = list(df.groupby(RUN_KEY, sort=False).groups)
    if with_depth is None:
        with_depth = df["depth"].nunique() > 1
    many_backends = df["backend"].nunique() > 1
    many_devices = df["device"].nunique() > 1
    labels = {}
    for key in keys:
        method, depth, backend, device = key
        label = method
        if with_depth:
            label += f" ({depth} layers)"
        extra = [v for v, many in ((backend, many_backends), (device, many_devices)) if many]
        if extra:
            label += " [" + ", ".join(extra) + "]"
        labels[key] = label
    return labels


_LINESTYLES = ["-", "--", ":", "-."]
_MARKERS = ["o", "s", "^", "D", "v", "P", "X", "*"]


def _styles(keys: list[tuple]) -> dict[tuple, dict]:
    """One colour per method (tab10, then tab20), one line style and marker per depth."""
    from matplotlib import colormaps

    methods = list(dict.fromkeys(k[0] for k in keys))
    depths = sorted({k[1] for k in keys})
    cmap = colormaps["tab10" if len(methods) <= 10 else "tab20"]
    styles = {}
    for key in keys:
        m, d = methods.index(key[0]), depths.index(key[1])
        styles[key] = dict(color=cmap(m % cmap.N), linestyle=_LINESTYLES[d % len(_LINESTYLES)],
                           marker=_MARKERS[d % len(_MARKERS)])
    return styles


def _legend(ax, handles, labels) -> None:
    # Handles and labels passed explicitly: matplotlib hides labels starting with "_".
    if len(handles) > 8:
        ax.legend(handles, labels, fontsize="small", loc="upper left", bbox_to_anchor=(1.01, 1.0))
    else:
        ax.legend(handles, labels, fontsize="small", loc="best")


def _save(fig: Figure, out_path: str | os.PathLike) -> Path:
    out = Path(out_path)
    out.parent.mkdir(parents=True, exist_ok=True)
    FigureCanvasAgg(fig)
    tmp = out.with_name(f".{out.stem}.tmp{os.getpid()}{out.suffix}")
    try:
        fig.savefig(tmp, dpi=120, bbox_inches="tight")
        os.replace(tmp, out)
    finally:
        if tmp.exists():
            tmp.unlink()
    return out


def _maybe_log(ax, values) -> None:
    vals = [v for v in values if v > 0]
    if vals and max(vals) / min(vals) >= 100:
        ax.set_xscale("log")


def _curve_plot(results: Results, out_path, x: str, xlabel: str, title: str) -> Path:
    df = load_results(results)
    fig = Figure(figsize=(7.5, 5))
    ax = fig.subplots()
    labels = _labels(df)
    styles = _styles(list(labels))
    handles = []
    for key, group in df.groupby(RUN_KEY, sort=False):
        group = group.sort_values("samples_seen")
        (line,) = ax.plot(group[x], 100.0 * group["test_accuracy"], markersize=3.5,
                          **styles[key])
        handles.append(line)
    if x == "train_seconds":
        _maybe_log(ax, df[x].tolist())
    ax.set_xlabel(xlabel)
    ax.set_ylabel("test accuracy (%)")
    ax.set_title(title)
    ax.grid(True, alpha=0.3)
    if handles:
        _legend(ax, handles, list(labels.values()))
    else:
        ax.text(0.5, 0.5, "no results", ha="center", va="center", transform=ax.transAxes)
    return _save(fig, out_path)


def plot_sample_efficiency(results: Results, out_path) -> Path:
    """Test accuracy (%) against training samples seen, one line per method (and depth)."""
    return _curve_plot(results, out_path, "samples_seen", "training samples seen",
                       "MNIST: sample efficiency")


def plot_clock_time(results: Results, out_path) -> Path:
    """Test accuracy (%) against training seconds (evaluation excluded), one line per run."""
    return _curve_plot(results, out_path, "train_seconds", "training time (s)",
                       "MNIST: accuracy against training time")


def final_results(results: Results) -> pd.DataFrame:
    """The last evaluation of each (latest) run: one row per method, depth, backend, device."""
    df = load_results(results)
    if df.empty:
        return df
    idx = df.groupby(RUN_KEY, sort=False)["samples_seen"].idxmax()
    return df.loc[idx.to_numpy()].reset_index(drop=True)


def plot_accuracy_vs_depth(results: Results, out_path) -> Path | None:
    """Final test accuracy (%) against depth (weight layers), one line per method.

    Returns ``None`` (and writes nothing) when the results hold fewer than two depths.
    """
    final = final_results(results)
    if final.empty or final["depth"].nunique() < 2:
        return None
    fig = Figure(figsize=(7.5, 5))
    ax = fig.subplots()
    series_key = ["method", "backend", "device"]
    many_backends = final["backend"].nunique() > 1
    many_devices = final["device"].nunique() > 1
    handles, labels = [], []
    for (method, backend, device), group in final.groupby(series_key, sort=False):
        group = group.sort_values("depth")
        extra = [v for v, many in ((backend, many_backends), (device, many_devices)) if many]
        labels.append(method + (" [" + ", ".join(extra) + "]" if extra else ""))
        (line,) = ax.plot(group["depth"], 100.0 * group["test_accuracy"], marker="o")
        handles.append(line)
    ax.set_xticks(sorted(final["depth"].unique().tolist()))
    ax.set_xlabel("depth (weight layers)")
    ax.set_ylabel("final test accuracy (%)")
    ax.set_title("MNIST: accuracy against depth")
    ax.grid(True, alpha=0.3)
    _legend(ax, handles, labels)
    return _save(fig, out_path)


#: The files :func:`plot_all` draws (the last one only when several depths ran).
PLOT_FILES = ("sample_efficiency.png", "clock_time.png", "accuracy_vs_depth.png")


def plot_all(results: Results, out_dir) -> list[Path]:
    """Draw ``sample_efficiency.png``, ``clock_time.png`` and, when several depths ran,
    ``accuracy_vs_depth.png`` (:data:`PLOT_FILES`) into ``out_dir``; returns the paths written."""
    df = load_results(results)
    out_dir = Path(out_dir)
    samples_png, clock_png, depth_png = PLOT_FILES
    written = [
        plot_sample_efficiency(df, out_dir / samples_png),
        plot_clock_time(df, out_dir / clock_png),
    ]
    depth_plot = plot_accuracy_vs_depth(df, out_dir / depth_png)
    if depth_plot is not None:
        written.append(depth_plot)
    return written
