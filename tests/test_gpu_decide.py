"""bench/gpu_decide.py: grouping of bench/gpu.py rows and the decisions it suggests."""
from __future__ import annotations

import csv
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))

import gpu_decide  # noqa: E402

FIELDS = ["device", "op", "shape", "check", "triton ms", "triton-graph ms", "target ms"]
# No switch set in the tree: every default row is the plain Triton path (the contests as designed)
OFF = gpu_decide.Shipped.off()


def _write(path, rows):
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, FIELDS)
        w.writeheader()
        for op, shape, check, tri, graph, target in rows:
            w.writerow({"device": "H200", "op": op, "shape": shape, "check": check, "triton ms": tri,
                        "triton-graph ms": graph, "target ms": target})


def test_parse_name():
    assert gpu_decide.parse_name("pc_relax[rows] tf32x3") == ("pc_relax", "rows", "tf32x3")
    assert gpu_decide.parse_name("pc_relax tf32") == ("pc_relax", "", "tf32")
    assert gpu_decide.parse_name("reservoir_run[persistent-ll]") == ("reservoir_run", "persistent-ll", "fp32")


def test_decisions_and_later_files_win(tmp_path, capsys):
    net = "784-1000-500-250-10"
    first, second = tmp_path / "gpu.csv", tmp_path / "new.csv"
    _write(first, [
        ("reservoir_run", "N2000 B1 T784 D1", "ok", "2.120", "2.110", "<= 2.0"),
        ("reservoir_run[persistent-ll]", "N2000 B1 T784 D1", "ok", "9.0", "9.0", "<= 2.0"),  # replaced
        ("pc_relax", f"{net} B256 T20", "ok", "4.79", "2.93", "<= 0.8"),
        ("pc_relax", f"{net} B4096 T20", "ok", "17.77", "16.55", "<= 8.0"),
    ])
    _write(second, [
        ("reservoir_run[persistent-ll]", "N2000 B1 T784 D1", "ok", "1.50", "1.48", "<= 2.0"),
        ("reservoir_run[persistent-graph]", "N2000 B1 T784 D1", "ok", "1.90", "2.20", "<= 2.0"),
        ("pc_relax[rows]", f"{net} B256 T20", "ok", "1.20", "1.10", "<= 0.8"),
        ("pc_relax[rows]", f"{net} B4096 T20", "ok", "20.0", "19.0", "<= 8.0"),  # loses
        ("pc_relax[rows] tf32x3", f"{net} B256 T20", "FAIL", "0.10", "0.09", "<= 0.8"),  # no twin
        ("pc_relax[persistent]", f"{net} B256 T20", "ok", "0.70", "0.65", "<= 0.8"),
        ("pc_relax[cublas]", f"{net} B256 T20", "ok", "3.00", "3.50", "<= 0.8"),  # loses in a graph
        ("pc_relax[cublas]", f"{net} B4096 T20", "ok", "6.00", "5.00", "<= 8.0"),
        ("pc_relax[cublas-concurrent]", f"{net} B256 T20", "ok", "2.00", "1.00", "<= 0.8"),
        ("pc_relax[cublas-concurrent]", f"{net} B4096 T20", "ok", "6.10", "4.00", "<= 8.0"),  # plain loses
        ("pc_relax[cublas] tf32", f"{net} B4096 T20", "ok", "4.80", "4.30", "<= 2.5"),
        ("pc_relax[cublas-concurrent] tf32", f"{net} B4096 T20", "ok", "4.70", "4.20", "<= 2.5"),
        ("pc_relax[cublas-full]", f"{net} B256 T20", "ok", "1.90", "3.40", "<= 0.8"),
        ("pc_relax", "784-861-645-484-10 B64 T3 relu ce", "ok", "1.50", "0.40", "-"),
        ("pc_relax[full]", "784-861-645-484-10 B64 T3 relu ce", "ok", "0.45", "0.41", "-"),
        ("reservoir_run", "N2000 B256 T28 D28", "ok", "5.01", "4.99", "<= 1.5"),
        ("reservoir_run[cublas]", "N2000 B256 T28 D28", "ok", "1.60", "1.40", "<= 1.5"),
        ("hebbian_update[oja]", "B256 784->1024", "ok", "0.30", "0.10", "-"),
        ("hebbian_update[oja,cublas]", "B256 784->1024", "ok", "0.50", "0.09", "-"),  # plain loses
        ("hebbian_update[gha]", "B256 784->1024", "ok", "0.862", "0.165", "<= 0.08"),
        ("hebbian_update[gha,cublas]", "B256 784->1024", "ok", "0.50", "0.10", "<= 0.08"),
        ("hebbian_update[gha] tf32", "B1024 4096->4096", "ok", "1.70", "1.66", "<= 1.23"),
        ("hebbian_update[gha,cublas] tf32", "B1024 4096->4096", "ok", "0.90", "0.80", "<= 1.23"),
        ("hebbian_update[gha,cublas-blocks]", "B256 784->1024", "ok", "0.40", "0.07", "<= 0.08"),
        ("hebbian_update[gha,graph]", "B256 784->1024", "ok", "0.170", "0.166", "<= 0.08"),
        ("hebbian_update[gha,cublas-blocks-graph]", "B256 784->1024", "ok", "0.075", "0.07", "<= 0.08"),
        ("softwta_update", "B256 784->1024", "ok", "0.250", "0.099", "<= 0.04"),
        ("softwta_update[graph]", "B256 784->1024", "ok", "0.300", "0.099", "<= 0.04"),  # loses
        ("softwta_update[cublas-graph] tf32", "B1024 4096->4096", "ok", "0.39", "0.40", "<= 0.41"),
        ("softwta_update[cublas]", "B256 784->1024", "ok", "0.40", "0.050", "<= 0.04"),
        ("softwta_update[cublas-split2]", "B256 784->1024", "ok", "0.39", "0.042", "<= 0.04"),
        ("softwta_update[cublas-split4]", "B256 784->1024", "ok", "0.38", "0.040", "<= 0.04"),
        ("softwta_update[cublas-split4] tf32", "B1024 4096->4096", "ok", "0.35", "0.50", "<= 0.41"),  # loses
        ("softwta_update[cublas-split2] tf32", "B1024 4096->4096", "ok", "0.29", "0.29", "<= 0.41"),
        ("hebbian_update[gha,cublas-blocks] tf32", "B1024 4096->4096", "ok", "0.85", "0.75", "<= 1.23"),
        ("softwta_update tf32", "B1024 4096->4096", "ok", "1.20", "1.16", "<= 0.41"),
        ("softwta_update[cublas] tf32", "B1024 4096->4096", "FAIL", "0.30", "0.30", "<= 0.41"),
        ("softwta_update tf32x3", "B256 784->1024", "ok", "0.07", "0.065", "<= 0.04"),
        ("softwta_update[cublas] tf32x3", "B256 784->1024", "ok", "0.08", "0.06", "<= 0.04"),  # plain loses
        ("softwta_update tf32x3", "B1024 4096->4096", "ok", "3.0", "3.0", "-"),
        ("softwta_update[cublas] tf32x3", "B1024 4096->4096", "ok", "0.9", "0.8", "-"),
    ])
    rows = gpu_decide.read_rows([first, second])
    ll = [r for r in rows if r.variant == "persistent-ll"]
    assert len(ll) == 1 and ll[0].triton == 1.5  # the later file's row
    text = "\n".join(gpu_decide.decisions(rows, OFF))
    assert "DEFAULT_SYNC = 'll'" in text
    assert "PERSISTENT_GRAPHS = True" in text  # its plain call won (its graph column does not count)
    assert "ROWS_MAX_ROWS = 256" in text and "B4096 T20 fp32: rows 20.000 / 19.000 ms" in text
    assert "PERSISTENT_MAX_ROWS = 256" in text and "persistent 0.700 / 0.650 ms" in text
    assert "CUBLAS_MIN_ROWS = 4096" in text and "B256 T20 fp32: cublas 3.000 / 3.500 ms" in text
    assert "BATCHED_GEMM = 'cublas'" in text
    assert "CONCURRENT_GEMMS = False" in text and "concurrent 6.100 / 4.000 ms, one stream 6.000 / 5.000" in text
    assert "CONCURRENT_GEMMS_TF32 = True" in text  # decided on the tf32 rows alone
    assert "hebbian_update.py CUBLAS_MIN_MACS = 205520896 for hebbian_update[gha]" in text  # 256 * 784 * 1024
    assert "hebbian_update.py CUBLAS_MIN_MACS_TF32 = 17179869184 for hebbian_update[gha]" in text
    assert "softwta_update.py CUBLAS_MIN_MACS = 0" in text  # its B256 cuBLAS row loses the plain call
    assert "softwta_update.py CUBLAS_MIN_MACS_TF32 = 0" in text  # its only cuBLAS row failed its check
    assert "softwta_update.py CUBLAS_MIN_MACS_TF32X3 = 17179869184" in text  # won at 4096 only
    assert "CUBLAS_MIN_MACS = 0 for hebbian_update[oja]" in text
    assert "hebbian_update.py GRAPH_MAX_MACS = 205520896" in text
    assert "cublas-blocks-graph plain 0.075 ms (graph 0.070), cublas-blocks plain 0.400 ms" in text
    assert "softwta_update.py GRAPH_MAX_MACS = 0" in text  # lost at B256, so not above either
    assert "cublas-graph plain 0.390 ms (graph 0.400), cublas plain 0.300 ms (graph 0.300) -> cublas" in text

    assert "FULL_GRAPHS_MAX = 2" in text and "cublas-full plain 1.900 ms, cublas plain 3.000 ms" in text
    assert "full plain 0.450 ms, tiles plain 1.500 ms" in text
    assert "softwta_update.py SPLIT_K = 2" in text  # split 4 lost at 4096 tf32
    assert "split 2 0.390 / 0.042 ms, one GEMM 0.400 / 0.050 ms -> split" in text
    assert "TRIL_FORM = 'blocks'" in text and "blocks 0.400 / 0.070 ms, panels 0.500 / 0.100" in text
    assert "with TRIL_FORM = 'blocks': CUBLAS_MIN_MACS = 205520896 for GHA (fp32)" in text
    assert "with TRIL_FORM = 'blocks': CUBLAS_MIN_MACS_TF32 = 17179869184 for GHA (tf32)" in text
    assert gpu_decide.parse_name("hebbian_update[gha,cublas] tf32") == ("hebbian_update", "gha,cublas", "tf32")
    heb = [r for r in rows if r.op == "hebbian_update[gha,cublas] tf32"]
    assert heb[0].base == "hebbian_update[gha]" and heb[0].variant == "cublas"
    summary = gpu_decide.summary(rows)
    # the failing row is never the fastest, and meets no target
    failing = [ln for ln in summary.splitlines() if "FAIL" in ln]
    assert failing and all(not ln.endswith("*") and " no" in ln for ln in failing)
    assert gpu_decide.main([str(first), str(second)]) == 0
    assert "DEFAULT_SYNC" in capsys.readouterr().out


def test_named_reservoir_twins(tmp_path):
    """DEFAULT_SYNC / BATCHED_GEMM from the rows that name both choices, where present."""
    path = tmp_path / "g.csv"
    _write(path, [
        ("reservoir_run", "N2000 B1 T784 D1", "ok", "1.0", "1.0", "<= 2.0"),  # already ll
        ("reservoir_run[persistent-ll]", "N2000 B1 T784 D1", "ok", "2.0", "1.9", "<= 2.0"),
        ("reservoir_run[persistent-barrier]", "N2000 B1 T784 D1", "ok", "2.1", "2.0", "<= 2.0"),
        ("reservoir_run", "N2000 B256 T28 D28", "ok", "0.1", "0.1", "<= 1.5"),  # already cuBLAS
        ("reservoir_run[cublas-gemm]", "N2000 B256 T28 D28", "ok", "2.4", "1.7", "<= 1.5"),
        ("reservoir_run[triton-gemm]", "N2000 B256 T28 D28", "ok", "2.3", "5.0", "<= 1.5"),
        ("reservoir_run[graph]", "N2000 B256 T28 D28", "ok", "0.09", "0.09", "<= 1.5"),
        ("reservoir_run[cublas-gemm] tf32x3", "N2000 B256 T28 D28", "ok", "1.3", "1.2", "<= 1.5"),
        ("reservoir_run[triton-gemm] tf32x3", "N2000 B256 T28 D28", "ok", "1.6", "1.48", "<= 1.5"),
    ])
    text = "\n".join(gpu_decide.decisions(gpu_decide.read_rows([path]), OFF))
    assert "DEFAULT_SYNC = 'll': ll 2.000 / 1.900 ms (ok) against barrier 2.100 / 2.000" in text
    assert "BATCHED_GEMM = 'triton'" in text  # the plain call lost
    assert "BATCHED_GEMM_TF32X3 = 'cublas': cublas 1.300 / 1.200 ms (ok) against triton 1.600 / 1.480" in text
    assert "GRAPH_MIN_STEPS = 28: 28 0.090 / 0.090 ms (ok) against 0 0.100 / 0.100 ms" in text


def test_no_decision_without_rows(tmp_path):
    path = tmp_path / "g.csv"
    _write(path, [("softwta_update", "B256 784->1024", "ok", "0.469", "0.098", "<= 0.04")])
    text = "\n".join(gpu_decide.decisions(gpu_decide.read_rows([path]), OFF))
    assert "DEFAULT_SYNC: no decision" in text and "ROWS_MAX_ROWS: no decision" in text
    assert "BATCHED_GEMM: no decision" in text and "CUBLAS_MIN_ROWS: no decision" in text
    assert "PERSISTENT_MAX_ROWS: no decision" in text and "CONCURRENT_GEMMS: no decision" in text
    for switch in ("TRIL_FORM", "GRAPH_MAX_MACS", "FULL_GRAPHS_MAX", "SPLIT_K", "PERSISTENT_GRAPHS",
                   "GRAPH_MIN_STEPS", "BATCHED_GEMM_TF32X3", "CUBLAS_MIN_MACS_TF32X3"):
        assert f"{switch}: no decision" in text, switch


def test_switches_set_in_the_tree_skip_the_contests_their_default_rows_no_longer_stand_for():
    """With CUBLAS_MIN_MACS / GRAPH_MAX_MACS / GRAPH_MIN_STEPS set (as the eleventh session set
    them), the default rows already run the cuBLAS path and replay their graph: a variant row
    beating or losing to them says nothing about the switch. gpu_decide suggested turning each
    off again (CUBLAS_MIN_MACS = 0 from 'cublas 0.511 / 0.115 ms, triton 0.086 / 0.082 ms', the
    0.086 being the shipped cuBLAS path in a graph)."""
    path = Path(__file__).resolve().parents[1] / "bench" / "results" / "2026-11-28-h100"
    csvs = [path / n for n in ("run1_gpu.csv", "run1_new.csv", "run2_new.csv")]
    rows = gpu_decide.read_rows(csvs)
    shipped = gpu_decide.Shipped(
        cublas_min_macs={"hebbian_update": 256 * 1024 * 784, "softwta_update": 256 * 1024 * 784},
        graph_max_macs={"hebbian_update": 1024 * 4096 * 4096, "softwta_update": 1024 * 4096 * 4096},
        graph_min_steps=28)
    text = "\n".join(gpu_decide.decisions(rows, shipped))
    for wrong in ("hebbian_update.py CUBLAS_MIN_MACS = 0", "softwta_update.py CUBLAS_MIN_MACS = 0",
                  "GRAPH_MAX_MACS = 0", "GRAPH_MIN_STEPS = 0:", "GRAPH_MIN_STEPS = 28:"):
        assert wrong not in text, wrong
    assert "hebbian_update.py CUBLAS_MIN_MACS: no decision for hebbian_update[gha]" in text
    assert "hebbian_update.py GRAPH_MAX_MACS: no decision (every twin replayed its graph" in text
    assert "GRAPH_MIN_STEPS: no decision (the default reservoir_run row at T28 already" in text
    assert "skipped (the default row ran the cuBLAS path too: CUBLAS_MIN_MACS = 205520896" in text
    # contests whose rows set both sides explicitly are still decided
    assert "CUBLAS_MIN_MACS_TF32 = 17179869184 for hebbian_update[gha]" in text
    assert "TRIL_FORM = 'blocks'" in text and "DEFAULT_SYNC = 'll'" in text
    # the same rows with nothing set: the contests as designed (the old, wrong suggestions)
    assert "hebbian_update.py CUBLAS_MIN_MACS = 0" in "\n".join(gpu_decide.decisions(rows, OFF))


def test_shipped_reads_this_tree():
    s = gpu_decide.Shipped.from_tree()
    from bpalts.kernels import hebbian_update, reservoir_run

    assert s.cublas_min_macs["hebbian_update"] == hebbian_update.CUBLAS_MIN_MACS
    assert s.graph_max_macs["hebbian_update"] == hebbian_update.GRAPH_MAX_MACS
    assert s.graph_min_steps == reservoir_run.GRAPH_MIN_STEPS


def test_tf32x3_rows_must_be_float32_level(tmp_path, capsys):
    """A tf32x3 row that passed gpu.py's check but whose error from float64 is over
    TF32X3_ERR64_FACTOR times the fp32 reference's is shown as 'acc', wins no contest and is
    never the fastest; within the factor (or without err64 figures) it counts; fp32 rows are not
    held to it. The figures are the H200's (2026-11-28)."""
    fields = FIELDS + ["err64 t/r"]
    path = tmp_path / "g.csv"
    rows = [
        ("reservoir_run[cublas-gemm] tf32x3", "N2000 B256 T28 D28", "1.302", "1.238", "1.3e-05/1.2e-07"),
        ("reservoir_run[triton-gemm] tf32x3", "N2000 B256 T28 D28", "1.612", "1.540", "1.2e-07/1.2e-07"),
        ("softwta_update[cublas] tf32x3", "B1024 4096->4096", "0.858", "0.848", "5.3e-05/5.1e-06"),
        ("softwta_update tf32x3", "B1024 4096->4096", "2.003", "1.990", "1.8e-05/5.1e-06"),  # 3.5x: counts
        ("softwta_update[cublas] tf32x3", "B256 784->1024", "0.050", "0.040", "-"),  # no figures: counts
        ("softwta_update tf32x3", "B256 784->1024", "0.068", "0.065", "2.5e-06/2.2e-06"),
        ("reservoir_run[cublas-gemm]", "N2000 B256 T28 D28", "1.0", "1.0", "9.9e-05/1.0e-07"),  # fp32
        ("reservoir_run[triton-gemm]", "N2000 B256 T28 D28", "5.0", "5.0", "1.0e-07/1.0e-07"),
    ]
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fields)
        w.writeheader()
        for op, shape, tri, graph, err in rows:
            w.writerow({"device": "H200", "op": op, "shape": shape, "check": "ok", "triton ms": tri,
                        "triton-graph ms": graph, "target ms": "-", "err64 t/r": err})
    parsed = gpu_decide.read_rows([path])
    by = {(r.op, r.shape): r for r in parsed}
    acc = by[("reservoir_run[cublas-gemm] tf32x3", "N2000 B256 T28 D28")]
    assert (acc.err64, acc.err64_ref, acc.status, acc.usable) == (1.3e-05, 1.2e-07, "acc", False)
    assert by[("softwta_update tf32x3", "B1024 4096->4096")].status == "ok"
    assert by[("softwta_update[cublas] tf32x3", "B256 784->1024")].err64 is None
    assert by[("reservoir_run[cublas-gemm]", "N2000 B256 T28 D28")].status == "ok"  # fp32: no factor
    text = "\n".join(gpu_decide.decisions(parsed, OFF))
    assert ("BATCHED_GEMM_TF32X3 = 'triton': cublas 1.302 / 1.238 ms (acc) against triton 1.612 / "
            "1.540 ms (plain / graph); cublas is not float32-level: error from float64 1.3e-05 against "
            "the fp32 reference's 1.2e-07") in text
    assert "BATCHED_GEMM = 'cublas'" in text
    # 4096 lost on accuracy; B256 won (no figures): no threshold from which every row won
    assert "CUBLAS_MIN_MACS_TF32X3 = 0 for softwta_update" in text
    assert ("softwta_update B1024 4096->4096 tf32x3: cublas 0.858 / 0.848 ms, triton 2.003 / 1.990 ms "
            "-> triton (not float32-level: error from float64 5.3e-05 against the fp32 reference's "
            "5.1e-06)") in text
    table = gpu_decide.summary(parsed)
    line = next(ln for ln in table.splitlines() if ln.startswith("reservoir_run N2000 B256 T28 D28")
                and "cublas-gemm tf32x3" in ln)
    assert " acc " in line and not line.endswith("*")
