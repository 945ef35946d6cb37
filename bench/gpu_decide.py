"""Read bench/gpu.py CSVs from a GPU session and say which variant of each op is fastest, against
the issues' targets, and what that means for the switches that wait on a GPU timing.

    python bench/gpu_decide.py OUTDIR/new.csv OUTDIR/gpu.csv

Rows are grouped by (op, shape), the op being the row name without its variant (``[rows]``,
``[persistent-ll]``, ...) and precision (``tf32``, ``tf32x3``). For each group it prints every
variant's plain-call and CUDA-graph Triton times, whether its correctness check passed, and the
target. A row whose check did not pass never counts as the fastest.

Then the decisions (each a suggestion, with the two times it rests on; the figures come from
the CSVs, nothing is measured here):

- ``kernels/reservoir_run.py`` ``DEFAULT_SYNC``: ``"ll"`` if ``reservoir_run[persistent-ll]``
  beats ``reservoir_run[persistent-barrier]`` (or, in older CSVs without it, the default row)
  at N2000 B1 T784, plain call and graph both.
- ``kernels/reservoir_run.py`` ``BATCHED_GEMM``: ``"cublas"`` if ``reservoir_run[cublas-gemm]``
  beats ``reservoir_run[triton-gemm]`` at N2000 B256 T28 (older CSVs: ``[cublas]`` against the
  default row), plain call and graph both.
- ``kernels/reservoir_run.py`` ``BATCHED_GEMM_TF32X3``: ``"cublas"`` if
  ``reservoir_run[cublas-gemm] tf32x3`` (one TF32 GEMM of the split operands) beats
  ``reservoir_run[triton-gemm] tf32x3`` at N2000 B256 T28, plain call and graph both.
- ``kernels/pc_relax.py`` ``CONCURRENT_GEMMS`` (fp32 rows) and ``CONCURRENT_GEMMS_TF32`` (tf32
  rows): True if ``pc_relax[cublas-concurrent]`` beat ``pc_relax[cublas]`` in every row measured
  at those precisions (same shape and precision, plain call and graph).
- ``kernels/hebbian_update.py`` ``TRIL_FORM``: ``"blocks"`` if ``hebbian_update[gha,cublas-blocks]``
  beat ``hebbian_update[gha,cublas]`` (the panels) in every row measured; and, from the blocks
  rows against the Triton path, the ``CUBLAS_MIN_MACS`` thresholds as they would be with it.
- ``kernels/hebbian_update.py`` and ``kernels/softwta_update.py`` ``GRAPH_MAX_MACS``: the
  largest ``B * N * F`` up to which every ``[...graph]`` row's plain call (replayed from the
  op's cached CUDA graph) beat its twin's without the graph (``[graph]`` against the default
  row, ``[cublas-graph]`` against ``[cublas]``, ``[cublas-blocks-graph]`` against
  ``[cublas-blocks]``).
- ``kernels/softwta_update.py`` ``SPLIT_K``: a split whose ``softwta_update[cublas-split<k>]``
  rows beat ``softwta_update[cublas]`` in every row measured (plain call and graph), the fastest
  in a graph at the smallest shape; 1 if none did.
- ``kernels/pc_relax.py`` ``FULL_GRAPHS_MAX``: 2 if every ``pc_relax[...full]`` row's plain
  call beat its twin's without the full graph, else 0.
- ``kernels/reservoir_run.py`` ``GRAPH_MIN_STEPS``: 28 (the row's step count) if
  ``reservoir_run[graph]``'s plain call beats the default row's at N2000 B256 T28, else 0
  (off); ``PERSISTENT_GRAPHS``: True if ``reservoir_run[persistent-graph]``'s plain call beats
  the default row's at N2000 B1 T784. (In the bench's own graph both record the same launches.)
- ``kernels/pc_relax.py`` ``ROWS_MAX_ROWS``: the largest batch at which the rows path beat the
  tile path at the same precision, plain call and graph both (0 if it never did).
- ``kernels/pc_relax.py`` ``PERSISTENT_MAX_ROWS``: the same for the persistent path
  (``pc_relax[persistent]``).
- ``kernels/pc_relax.py`` ``CUBLAS_MIN_ROWS``: the smallest batch from which the cuBLAS path
  beat the tile path in every row measured (same shape and precision, plain call and graph
  both); 0 (never) if it lost at the largest batch.
- ``kernels/hebbian_update.py`` and ``kernels/softwta_update.py`` ``CUBLAS_MIN_MACS`` (fp32)
  and ``CUBLAS_MIN_MACS_TF32`` (tf32): likewise in ``B * N * F``, from the rows at that
  precision (``hebbian_update[<rule>,cublas]`` against ``hebbian_update[<rule>]``, one line per
  rule measured: the switch is shared by the dense rules; ``softwta_update[cublas]`` against
  ``softwta_update``); and ``softwta_update.py``'s ``CUBLAS_MIN_MACS_TF32X3`` from its tf32x3
  rows (the cuBLAS path's 3xTF32 split operands against the Triton path's ``tl.dot`` tf32x3).

A tf32x3 row counts only if it is float32-level: its error from a float64 run at most
``TF32X3_ERR64_FACTOR`` (4) times the fp32 reference's (gpu.py's ``err64 t/r`` column); one that
passed gpu.py's check (the fp32 tolerance) but not this shows ``acc`` and wins nothing.

When the same (op, shape) row appears in several CSVs, the last file given wins.

Some twins are the ops' default rows, which run the ops as shipped: a switch already set in
this tree (``CUBLAS_MIN_MACS`` fp32, ``GRAPH_MAX_MACS``, ``GRAPH_MIN_STEPS``,
``PERSISTENT_GRAPHS``; read from ``bpalts.kernels`` at decision time, :class:`Shipped`) puts the
default row on the very path its contest is about, and comparing against it would decide by
noise, or against the wrong path (e.g. suggest turning a switch off because the variant row
lost to the default row that already takes it). Those contests are skipped, with a line saying
so; a switch with no contest left gets "no decision".
"""
from __future__ import annotations

import argparse
import csv
import re
import sys
from dataclasses import dataclass

PRECISIONS = ("tf32", "tf32x3")  # row-name suffixes; no suffix: fp32
# precision="tf32x3" promises float32-level accuracy: a tf32x3 row whose error from float64
# (gpu.py's "err64 t/r": Triton / the fp32 reference) is more than this many times the fp32
# reference's passed gpu.py's check (its tolerance is the fp32 one, 1e-4) but is not float32-level,
# and never wins a contest or counts as the fastest ("acc" in the check column). Why: on an H200
# (2026-11-28) the cuBLAS form of 3xTF32 (one TF32 GEMM of split operands) was 1.3e-5 / 1.2e-7
# (reservoir N2000 B256 T28: 108x) and 5.3e-5 / 5.1e-6 (softwta 4096: 10x), where Triton's
# tl.dot tf32x3 was within 3.5x in every row.
TF32X3_ERR64_FACTOR = 4.0


@dataclass
class Row:
    op: str  # full row name, e.g. "pc_relax[rows] tf32x3"
    base: str  # "pc_relax"
    variant: str  # "rows", "persistent-ll", or "" for the default path
    precision: str  # "fp32", "tf32", "tf32x3"
    shape: str
    ok: bool
    triton: float | None
    graph: float | None
    target: float | None
    err64: float | None = None  # Triton's error from a float64 run ("err64 t/r", t)
    err64_ref: float | None = None  # the fp32 reference's (r)

    @property
    def fp32_level(self) -> bool:
        """Not a tf32x3 row, or its float64 error within TF32X3_ERR64_FACTOR of the fp32
        reference's (True where the CSV has no such figures)."""
        if self.precision != "tf32x3" or self.err64 is None or self.err64_ref is None:
            return True
        return self.err64 <= TF32X3_ERR64_FACTOR * self.err64_ref

    @property
    def err64_text(self) -> str:
        """The two float64 errors, as the decisions quote them."""
        return f"error from float64 {self.err64:.1e} against the fp32 reference's {self.err64_ref:.1e}"

    @property
    def usable(self) -> bool:
        """Passed gpu.py's check and, at tf32x3, float32-level (:attr:`fp32_level`)."""
        return self.ok and self.fp32_level

    @property
    def status(self) -> str:
        return "FAIL" if not self.ok else ("acc" if not self.fp32_level else "ok")

    @property
    def best(self) -> float | None:
        times = [t for t in (self.triton, self.graph) if t is not None]
        return min(times) if times else None


@dataclass(frozen=True)
class Shipped:
    """The switches of this tree that decide which path an op's default bench row ran (the
    constants of ``kernels/<module>.py``; 0 / False: off). ``off()``: none set, every default
    row the plain Triton path without a graph replay."""

    cublas_min_macs: dict  # module -> CUBLAS_MIN_MACS (fp32; B * N * F from which: cuBLAS)
    graph_max_macs: dict  # module -> GRAPH_MAX_MACS (B * N * F up to which: a graph replay)
    graph_min_steps: int = 0  # reservoir_run: plain calls of at least this many steps replay
    persistent_graphs: bool = False  # reservoir_run: the persistent kernel's calls replay

    @classmethod
    def off(cls) -> "Shipped":
        return cls({}, {})

    @classmethod
    def from_tree(cls) -> "Shipped":
        """This checkout's constants (``off()`` where ``bpalts.kernels`` cannot be imported)."""
        import importlib

        try:
            mods = {m: importlib.import_module(f"bpalts.kernels.{m}")
                    for m in ("hebbian_update", "softwta_update", "reservoir_run")}
        except ImportError:
            return cls.off()
        dense = ("hebbian_update", "softwta_update")
        return cls({m: int(getattr(mods[m], "CUBLAS_MIN_MACS", 0)) for m in dense},
                   {m: int(getattr(mods[m], "GRAPH_MAX_MACS", 0)) for m in dense},
                   int(getattr(mods["reservoir_run"], "GRAPH_MIN_STEPS", 0)),
                   bool(getattr(mods["reservoir_run"], "PERSISTENT_GRAPHS", False)))

    def default_row_cublas(self, module: str, macs: int) -> bool:
        """Whether an fp32 default row of ``module`` at ``macs`` ran the cuBLAS path."""
        threshold = self.cublas_min_macs.get(module, 0)
        return 0 < threshold <= macs

    def replays(self, module: str, macs: int) -> bool:
        """Whether a plain call of ``module`` at ``macs`` (any path, unless forced) replayed the
        op's cached graph."""
        return 0 < macs <= self.graph_max_macs.get(module, 0)


def _ms(text: str) -> float | None:
    m = re.search(r"[-+]?\d*\.?\d+(?:[eE][-+]?\d+)?", text or "")
    return float(m.group(0)) if m and text.strip() not in ("", "-") else None


def _err64(text: str) -> dict:
    """``"1.3e-05/1.2e-07"`` -> ``{"err64": 1.3e-05, "err64_ref": 1.2e-07}`` (None where absent)."""
    t, _, r = (text or "").partition("/")
    return {"err64": _ms(t), "err64_ref": _ms(r)}


def parse_name(op: str) -> tuple[str, str, str]:
    """``"pc_relax[rows] tf32x3"`` -> ("pc_relax", "rows", "tf32x3")."""
    name, _, rest = op.partition(" ")
    precision = rest.strip() if rest.strip() in PRECISIONS else "fp32"
    m = re.match(r"([^\[]+)(?:\[(.+)\])?$", name)
    base, variant = (m.group(1), m.group(2) or "") if m else (name, "")
    return base, variant, precision


def read_rows(paths) -> list[Row]:
    rows: dict[tuple[str, str], Row] = {}
    for path in paths:
        with open(path, newline="") as f:
            for r in csv.DictReader(f):
                base, variant, precision = parse_name(r["op"])
                # gpu.py's hebbian rows carry the rule in brackets: part of the op; a variant
                # follows it after a comma ("hebbian_update[gha,cublas]")
                if base == "hebbian_update" and variant:
                    rule, _, variant = variant.partition(",")
                    base = f"{base}[{rule}]"
                rows[(r["op"], r["shape"])] = Row(
                    op=r["op"], base=base, variant=variant, precision=precision, shape=r["shape"],
                    ok=r.get("check", "") == "ok", triton=_ms(r.get("triton ms", "")),
                    graph=_ms(r.get("triton-graph ms", "")), target=_ms(r.get("target ms", "")),
                    **_err64(r.get("err64 t/r", "")))
    return list(rows.values())


def _fmt(v: float | None) -> str:
    return "-" if v is None else f"{v:.3f}"


def summary(rows: list[Row]) -> str:
    groups: dict[tuple[str, str], list[Row]] = {}
    for r in rows:
        groups.setdefault((r.base, r.shape), []).append(r)
    lines = [f"{'op, shape':52s} {'variant':22s} {'check':5s} {'triton':>8s} {'graph':>8s} "
             f"{'target':>7s}  meets"]
    for (base, shape), members in groups.items():
        members.sort(key=lambda r: (r.precision != "fp32", r.precision, r.variant))
        fastest = min((r for r in members if r.usable and r.best is not None), key=lambda r: r.best,
                      default=None)
        for r in members:
            label = (r.variant or "default") + ("" if r.precision == "fp32" else f" {r.precision}")
            meets = "-" if r.target is None or r.best is None else ("yes" if r.usable and r.best <= r.target else "no")
            star = " *" if r is fastest else ""
            lines.append(f"{base + ' ' + shape:52s} {label:22s} {r.status:5s} "
                         f"{_fmt(r.triton):>8s} {_fmt(r.graph):>8s} {_fmt(r.target):>7s}  {meets}{star}")
    lines.append("* fastest passing variant of the group (min of plain call and graph)")
    lines.append(f"acc: passed gpu.py's check, but a tf32x3 row whose error from float64 is over "
                 f"{TF32X3_ERR64_FACTOR:g}x the fp32 reference's: not float32-level, never the fastest")
    return "\n".join(lines)


def _beats(a: Row | None, b: Row | None) -> bool:
    """a is faster than b in both the plain call and the graph (where both were timed)."""
    if a is None or b is None or not a.usable:
        return False
    pairs = [(x, y) for x, y in ((a.triton, b.triton), (a.graph, b.graph)) if x is not None and y is not None]
    return bool(pairs) and all(x < y for x, y in pairs)


def _beats_plain(a: Row | None, b: Row | None) -> bool:
    """a's plain call is faster than b's (for switches that replay an op's own graph: in the
    bench's own graph both rows record the same launches, so only the plain call counts)."""
    return (a is not None and b is not None and a.usable and None not in (a.triton, b.triton)
            and a.triton < b.triton)


def _plain_twins(rows: list[Row], base: str, suffix: str):
    """``(row, without, twin, won)`` for every ``base[...suffix]`` row whose twin without the
    suffix (same shape and precision; ``without`` its variant, "" the default path) has a plain
    call timed; ``won``: :func:`_beats_plain`."""
    by = {(r.base, r.variant, r.precision, r.shape): r for r in rows}
    for r in rows:
        if r.base != base or not r.variant.endswith(suffix):
            continue
        without = r.variant[:-len(suffix)].rstrip("-")
        twin = by.get((base, without, r.precision, r.shape))
        if twin is None or r.triton is None or twin.triton is None:
            continue
        yield r, without, twin, _beats_plain(r, twin)


def decisions(rows: list[Row], shipped: Shipped | None = None) -> list[str]:
    """The suggestions, one string (or a headline and its detail lines) per switch. ``shipped``
    (default: this tree's, :meth:`Shipped.from_tree`) says which default rows already ran a
    switched-on path; their contests are skipped."""
    shipped = Shipped.from_tree() if shipped is None else shipped
    by = {(r.op, r.shape): r for r in rows}
    out = []
    # (switch, shape, the named choices' variants, the variant of older CSVs against the default
    # row, the two settings)
    for switch, shape, variant, against, legacy, yes, no in (
            ("DEFAULT_SYNC", "N2000 B1 T784 D1", "persistent-ll", "persistent-barrier",
             "persistent-ll", "ll", "barrier"),
            ("BATCHED_GEMM", "N2000 B256 T28 D28", "cublas-gemm", "triton-gemm", "cublas", "cublas",
             "triton")):
        if (f"reservoir_run[{against}]", shape) in by:
            out.append(_either(by, switch, "reservoir_run", shape, variant, yes, no, against=against))
        else:
            out.append(_either(by, switch, "reservoir_run", shape, legacy, yes, no))
    out.append(_either(by, "BATCHED_GEMM_TF32X3", "reservoir_run", "N2000 B256 T28 D28", "cublas-gemm",
                       "cublas", "triton", against="triton-gemm", precision="tf32x3"))
    # the op's own graph replays change only the plain call (in the bench's graph both rows
    # record the same launches): plain calls decide
    if 0 < shipped.graph_min_steps <= 28:
        out.append(f"GRAPH_MIN_STEPS: no decision (the default reservoir_run row at T28 already "
                   f"replays its graph: GRAPH_MIN_STEPS = {shipped.graph_min_steps} in this tree, "
                   "and the bench has no row with it off)")
    else:
        out.append(_either(by, "GRAPH_MIN_STEPS", "reservoir_run", "N2000 B256 T28 D28", "graph", 28,
                           0, plain_only=True))
    if shipped.persistent_graphs:
        out.append("PERSISTENT_GRAPHS: no decision (the default reservoir_run row at B1 already "
                   "replays its graph: PERSISTENT_GRAPHS = True in this tree)")
    else:
        out.append(_either(by, "PERSISTENT_GRAPHS", "reservoir_run", "N2000 B1 T784 D1",
                           "persistent-graph", True, False, plain_only=True))
    out.extend(_max_rows(rows, by, "rows", "ROWS_MAX_ROWS"))
    out.extend(_max_rows(rows, by, "persistent", "PERSISTENT_MAX_ROWS"))
    out.extend(_cublas_min_rows(rows, by))
    out.extend(_concurrent_gemms(rows, by))
    out.extend(_tril_form(rows, by, shipped))
    out.extend(_graph_max_macs(rows, shipped))
    out.extend(_full_graphs(rows))
    out.extend(_split_k(rows, by))
    rules = sorted({r.base for r in rows if r.base.startswith("hebbian_update[") and r.variant == "cublas"})
    for precision, switch in (("fp32", "CUBLAS_MIN_MACS"), ("tf32", "CUBLAS_MIN_MACS_TF32")):
        for base in rules or ["hebbian_update[gha]"]:
            out.extend(_cublas_min_macs(rows, by, base, "kernels/hebbian_update.py", precision, switch,
                                        shipped))
        out.extend(_cublas_min_macs(rows, by, "softwta_update", "kernels/softwta_update.py", precision,
                                    switch, shipped))
    out.extend(_cublas_min_macs(rows, by, "softwta_update", "kernels/softwta_update.py", "tf32x3",
                                "CUBLAS_MIN_MACS_TF32X3", shipped))
    return out


def _macs(shape: str) -> int:
    """``"B256 784->1024"`` -> 256 * 784 * 1024."""
    m = re.search(r"B(\d+) (\d+)->(\d+)", shape)
    return int(m.group(1)) * int(m.group(2)) * int(m.group(3)) if m else 0


def _smallest_winning(results: list[tuple[int, bool]]) -> int:
    """The smallest size from which every result at that size or larger is a win; 0 if none."""
    choice = 0
    for b in sorted({b for b, _ in results}, reverse=True):
        if all(won for bb, won in results if bb >= b):
            choice = b
        else:
            break
    return choice


def _contests(rows: list[Row], by: dict, base: str, variant: str, default: str) -> list[tuple]:
    """``(row, won, detail line)`` for every ``base[variant]`` row whose default-path twin (same
    op, shape and precision) was measured; ``default`` names that path in the line."""
    out = []
    for r in rows:
        if r.base != base or r.variant != variant:
            continue
        twin = by.get((r.base + ("" if r.precision == "fp32" else f" {r.precision}"), r.shape))
        if twin is None:
            continue
        won = _beats(r, twin)
        why = "" if r.fp32_level else f" (not float32-level: {r.err64_text})"
        out.append((r, won, f"  {base} {r.shape} {r.precision}: {variant} {_fmt(r.triton)} / "
                            f"{_fmt(r.graph)} ms, {default} {_fmt(twin.triton)} / {_fmt(twin.graph)} ms "
                            f"-> {variant if won else default}{why}"))
    return out


def _module(where: str) -> str:
    """``"kernels/hebbian_update.py"`` -> ``"hebbian_update"``."""
    return where.rsplit("/", 1)[-1].removesuffix(".py")


def _triton_twins(contests: list[tuple], where: str, precision: str, shipped: Shipped):
    """``contests`` split into those whose default-row twin ran the Triton path and detail lines
    for the others: fp32 default rows run the op as shipped, on the cuBLAS path from the tree's
    ``CUBLAS_MIN_MACS`` (the tf32 / tf32x3 ones are forced onto the Triton GEMMs by bench/gpu.py)."""
    kept, skipped = [], []
    for c in contests:
        r = c[0]
        if precision == "fp32" and shipped.default_row_cublas(_module(where), _macs(r.shape)):
            skipped.append(f"  {r.base} {r.shape} {precision}: skipped (the default row ran the cuBLAS "
                           f"path too: CUBLAS_MIN_MACS = {shipped.cublas_min_macs[_module(where)]} in "
                           "this tree)")
        else:
            kept.append(c)
    return kept, skipped


def _cublas_min_macs(rows: list[Row], by: dict, base: str, where: str, precision: str = "fp32",
                     switch: str = "CUBLAS_MIN_MACS", shipped: Shipped | None = None) -> list[str]:
    """``switch`` (the threshold at ``precision``) from ``base``'s cuBLAS rows at that precision
    against their Triton twins; a hebbian ``base`` names its rule (the switch is shared by the
    dense rules: take the largest of the rules' figures). Twins that ran the cuBLAS path as
    shipped are skipped (:func:`_triton_twins`)."""
    contests = [c for c in _contests(rows, by, base, "cublas", "triton") if c[0].precision == precision]
    contests, skipped = _triton_twins(contests, where, precision, shipped or Shipped.off())
    if not contests:
        why = "their Triton twins ran the cuBLAS path as shipped" if skipped else "no such rows"
        return [f"{where} {switch}: no decision for {base} (no {precision} cuBLAS rows with a Triton "
                f"twin: {why})"] + skipped
    best = _smallest_winning([(_macs(r.shape), won) for r, won, _ in contests])
    return [f"{where} {switch} = {best} for {base} (B * N * F from which the cuBLAS path won every "
            f"{precision} row; 0: never)"] + [line for _, _, line in contests] + skipped


def _either(by: dict, switch: str, op: str, shape: str, variant: str, yes: str, no: str,
            against: str = "", plain_only: bool = False, precision: str = "fp32") -> str:
    """``switch = yes`` if ``op[variant]`` beat the ``op[against]`` row (the default ``op`` row
    without ``against``) at ``shape`` and ``precision`` (plain call and graph both, or with
    ``plain_only`` the plain call), else ``no``."""
    suffix = "" if precision == "fp32" else f" {precision}"
    new = by.get((f"{op}[{variant}]{suffix}", shape))
    default = by.get(((f"{op}[{against}]" if against else op) + suffix, shape))
    if new is None or default is None:
        return f"{switch}: no decision (the {op}{suffix} {shape} rows are missing)"
    won = _beats_plain(new, default) if plain_only else _beats(new, default)
    choice = yes if won else no
    why = "" if new.fp32_level else f"; {yes} is not float32-level: {new.err64_text}"
    return (f"{switch} = {choice!r}: {yes} {_fmt(new.triton)} / {_fmt(new.graph)} ms "
            f"({new.status}) against {no} {_fmt(default.triton)} / "
            f"{_fmt(default.graph)} ms (plain / graph){why}")


def _max_rows(rows: list[Row], by: dict, variant: str, switch: str) -> list[str]:
    """The largest batch at which pc_relax[variant] beat the tile path (same shape, precision)."""
    contests = _contests(rows, by, "pc_relax", variant, "tiles")
    if not contests:
        return [f"{switch}: no decision (no pc_relax[{variant}] rows with a tile-path twin)"]
    best = max([_batch(r.shape) for r, won, _ in contests if won], default=0)
    return [f"{switch} = {best} (the largest batch where the {variant} path won; check below that "
            "it did not lose at a smaller one)"] + [line for _, _, line in contests]


def _batch(shape: str) -> int:
    m = re.search(r"\bB(\d+)\b", shape)
    return int(m.group(1)) if m else 0


def _cublas_min_rows(rows: list[Row], by: dict) -> list[str]:
    contests = _contests(rows, by, "pc_relax", "cublas", "tiles")
    if not contests:
        return ["CUBLAS_MIN_ROWS: no decision (no pc_relax[cublas] rows with a tile-path twin)"]
    best = _smallest_winning([(_batch(r.shape), won) for r, won, _ in contests])
    return [f"CUBLAS_MIN_ROWS = {best} (the smallest batch from which the cuBLAS path won every "
            "row; 0: never)"] + [line for _, _, line in contests]


def _variant_wins(rows: list[Row], by: dict, base: str, variant: str, against: str,
                  switch: str, yes, no, names: tuple[str, str], precisions=None) -> list[str]:
    """``switch = yes`` if ``base[variant]`` beat ``base[against]`` in every row measured (same
    shape and precision, plain call and graph both; only the rows at ``precisions`` if given),
    else ``no``; ``names`` label the two in the detail lines. A hebbian ``base`` names its rule
    (``hebbian_update[gha]``)."""
    lines, wins = [], []
    for r in rows:
        if r.base != base or r.variant != variant:
            continue
        if precisions is not None and r.precision not in precisions:
            continue
        suffix = "" if r.precision == "fp32" else f" {r.precision}"
        op = base[:-1] + f",{against}]" if base.endswith("]") else f"{base}[{against}]"
        twin = by.get((op + suffix, r.shape))
        if twin is None:
            continue
        won = _beats(r, twin)
        wins.append(won)
        lines.append(f"  {base} {r.shape} {r.precision}: {names[0]} {_fmt(r.triton)} / "
                     f"{_fmt(r.graph)} ms, {names[1]} {_fmt(twin.triton)} / {_fmt(twin.graph)} ms "
                     f"-> {names[0] if won else names[1]}")
    if not wins:
        return [f"{switch}: no decision (no {base} [{variant}] rows with a [{against}] twin)"]
    return [f"{switch} = {yes if all(wins) else no!r} ({names[0]} if it won every row)"] + lines


def _concurrent_gemms(rows: list[Row], by: dict) -> list[str]:
    """CONCURRENT_GEMMS (fp32; tf32x3 runs as fp32 on the cuBLAS path) and CONCURRENT_GEMMS_TF32:
    True if pc_relax[cublas-concurrent] beat pc_relax[cublas] in every row measured at those
    precisions (same shape and precision, plain call and graph both)."""
    names = ("concurrent", "one stream")
    return (_variant_wins(rows, by, "pc_relax", "cublas-concurrent", "cublas", "CONCURRENT_GEMMS",
                          True, False, names, precisions=("fp32", "tf32x3"))
            + _variant_wins(rows, by, "pc_relax", "cublas-concurrent", "cublas",
                            "CONCURRENT_GEMMS_TF32", True, False, names, precisions=("tf32",)))


def _tril_form(rows: list[Row], by: dict, shipped: Shipped | None = None) -> list[str]:
    """kernels/hebbian_update.py TRIL_FORM: "blocks" if hebbian_update[gha,cublas-blocks] beat
    hebbian_update[gha,cublas] (the panels) in every row measured; then the blocks rows against
    the Triton path, for CUBLAS_MIN_MACS as it would be with the blocks (twins that ran the
    cuBLAS path as shipped skipped)."""
    out = _variant_wins(rows, by, "hebbian_update[gha]", "cublas-blocks", "cublas",
                        "kernels/hebbian_update.py TRIL_FORM", "blocks", "panels",
                        ("blocks", "panels"))
    for precision, switch in (("fp32", "CUBLAS_MIN_MACS"), ("tf32", "CUBLAS_MIN_MACS_TF32")):
        contests = [c for c in _contests(rows, by, "hebbian_update[gha]", "cublas-blocks", "triton")
                    if c[0].precision == precision]
        contests, skipped = _triton_twins(contests, "kernels/hebbian_update.py", precision,
                                          shipped or Shipped.off())
        if contests:
            best = _smallest_winning([(_macs(r.shape), won) for r, won, _ in contests])
            out += [f"  with TRIL_FORM = 'blocks': {switch} = {best} for GHA ({precision})"]
            out += [line for _, _, line in contests]
        out += skipped
    return out


def _largest_winning(results: list[tuple[int, bool]]) -> int:
    """The largest size up to which every result at that size or smaller is a win; 0 if none."""
    choice = 0
    for b in sorted({b for b, _ in results}):
        if all(won for bb, won in results if bb <= b):
            choice = b
        else:
            break
    return choice


def _graph_max_macs(rows: list[Row], shipped: Shipped | None = None) -> list[str]:
    """GRAPH_MAX_MACS of kernels/hebbian_update.py and kernels/softwta_update.py: the largest
    B * N * F up to which every ``[...graph]`` row's plain call (replayed from the op's cached
    graph) beat its twin's without (``[graph]`` against the default row, ``[cublas-graph]``
    against ``[cublas]``, ``[cublas-blocks-graph]`` against ``[cublas-blocks]``), same shape and
    precision; 0 if the smallest lost. Plain calls only: in the bench's own graph both record
    the same launches. A twin whose plain call replayed the op's graph as shipped (the tree's
    ``GRAPH_MAX_MACS``: no bench row forces it off) is skipped."""
    shipped = shipped or Shipped.off()
    out = []
    for base, where in (("hebbian_update[gha]", "hebbian_update"), ("softwta_update", "softwta_update")):
        lines, wins = [], []
        for r, without, twin, won in _plain_twins(rows, base, "graph"):
            if shipped.replays(where, _macs(r.shape)):
                lines.append(f"  {base} {r.shape} {r.precision}: skipped ({without or 'default'} "
                             f"replayed its graph too: GRAPH_MAX_MACS = {shipped.graph_max_macs[where]} "
                             "in this tree)")
                continue
            wins.append((_macs(r.shape), won))
            lines.append(f"  {base} {r.shape} {r.precision}: {r.variant} plain {_fmt(r.triton)} ms "
                         f"(graph {_fmt(r.graph)}), {without or 'default'} plain {_fmt(twin.triton)} ms "
                         f"(graph {_fmt(twin.graph)}) -> {r.variant if won else without or 'default'}")
        if not wins:
            why = "every twin replayed its graph as shipped" if lines else "no [...graph] rows with a twin"
            out += [f"kernels/{where}.py GRAPH_MAX_MACS: no decision ({why})"] + lines
            continue
        out += [f"kernels/{where}.py GRAPH_MAX_MACS = {_largest_winning(wins)} (the largest B * N * F "
                "up to which every replayed plain call won; 0: never)"] + lines
    return out


def _split_k(rows: list[Row], by: dict) -> list[str]:
    """kernels/softwta_update.py SPLIT_K: the split whose ``softwta_update[cublas-split<k>]`` rows
    beat ``softwta_update[cublas]`` at every shape and precision where that split was measured
    (plain call and graph both; the fastest such split in a graph at the smallest shape); else 1."""
    lines, results = [], {}
    for r in rows:
        m = re.fullmatch(r"cublas-split(\d+)", r.variant) if r.base == "softwta_update" else None
        if not m:
            continue
        suffix = "" if r.precision == "fp32" else f" {r.precision}"
        twin = by.get((f"softwta_update[cublas]{suffix}", r.shape))
        if twin is None:
            continue
        k, won = int(m.group(1)), _beats(r, twin)
        results.setdefault(k, []).append((_macs(r.shape), won, r.graph))
        lines.append(f"  softwta_update {r.shape} {r.precision}: split {k} {_fmt(r.triton)} / "
                     f"{_fmt(r.graph)} ms, one GEMM {_fmt(twin.triton)} / {_fmt(twin.graph)} ms "
                     f"-> {'split' if won else 'one GEMM'}")
    if not results:
        return ["kernels/softwta_update.py SPLIT_K: no decision (no [cublas-split<k>] rows with a [cublas] twin)"]
    winners = [k for k, res in results.items() if all(won for _, won, _ in res)]

    def smallest_graph(k):  # rows without a graph time (None) are left out, not compared
        small = min(m for m, _, _ in results[k])
        return min((g for m, _, g in results[k] if m == small and g is not None), default=float("inf"))

    best = min(winners, key=smallest_graph, default=1)
    return [f"kernels/softwta_update.py SPLIT_K = {best} (a split that won every row it was "
            "measured in; 1: none did)"] + lines


def _full_graphs(rows: list[Row]) -> list[str]:
    """kernels/pc_relax.py FULL_GRAPHS_MAX: 2 if every ``pc_relax[...full]`` row's plain call
    beat its twin's without the full graph (``[cublas-full]`` against ``[cublas]``, ``[full]``
    against the tile path's row), same shape and precision; else 0. Plain calls only: in the
    bench's own graph both record the same launches."""
    lines, wins = [], []
    for r, without, twin, won in _plain_twins(rows, "pc_relax", "full"):
        wins.append(won)
        lines.append(f"  pc_relax {r.shape} {r.precision}: {r.variant} plain {_fmt(r.triton)} ms, "
                     f"{without or 'tiles'} plain {_fmt(twin.triton)} ms -> "
                     f"{'full graph' if won else 'without'}")
    if not wins:
        return ["FULL_GRAPHS_MAX: no decision (no pc_relax [...full] rows with a twin)"]
    return [f"FULL_GRAPHS_MAX = {2 if all(wins) else 0} (2 if the full graph won every plain call)"] + lines


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("csv", nargs="+", help="bench/gpu.py --csv outputs (later files win)")
    args = p.parse_args(argv)
    rows = read_rows(args.csv)
    if not rows:
        print("no rows", file=sys.stderr)
        return 1
    print(summary(rows))
    print()
    print("\n".join(decisions(rows)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
