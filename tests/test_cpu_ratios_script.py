"""bench/cpu_ratios.py (the interleaved reference / C++ ratios): its smoke run on tiny shapes,
the CSV of every timing, the summary table, and its argument errors."""
import csv
import subprocess
import sys
from pathlib import Path

import pytest

import bpalts

ROOT = Path(__file__).resolve().parents[1]
CPP = pytest.mark.skipif("cpp" not in bpalts.available_backends("cpu"), reason="bpalts._C not built")


def _run(*args):
    out = subprocess.run([sys.executable, "bench/cpu_ratios.py", *args], cwd=ROOT, capture_output=True,
                         text=True, timeout=300)
    return out.returncode, out.stdout, out.stderr


@CPP
def test_smoke_run_writes_every_timing_and_a_summary(tmp_path):
    timings, summary = tmp_path / "t.csv", tmp_path / "s.csv"
    rc, out, err = _run("--smoke", "--csv", str(timings), "--summary", str(summary))
    assert rc == 0, out + err
    rows = list(csv.DictReader(timings.open()))
    cases = {r["case"] for r in rows}
    # 2 rounds x (2 backends + the floor where the case has one), every case of the four families
    per_case = {c: [r["backend"] for r in rows if r["case"] == c] for c in cases}
    assert len(cases) >= 10 and all(float(r["ms"]) > 0 for r in rows)
    assert all(int(r["minor_faults"]) >= 0 for r in rows)  # resource is there on Linux
    for c, kinds in per_case.items():
        assert kinds.count("base") == kinds.count("other") == 2 and kinds.count("floor") in (0, 2), (c, kinds)
    floored = {c for c, kinds in per_case.items() if "floor" in kinds}
    # the GEMM-bound C++ paths (their GEMM calls replayed) and the dense reservoir (streaming W)
    for family in ("hebbian_update[bcm]", "softwta_update", "pc_relax", "reservoir_run N64 B1 T20 dense"):
        assert any(c.startswith(family) for c in floored), family
    assert not any("sparse path given U" in c or "CSR" in c for c in floored)
    for family in ("hebbian_update[gha]", "softwta_update", "pc_relax", "reservoir_run"):
        assert any(c.startswith(family) for c in cases), family
    table = list(csv.DictReader(summary.open()))
    assert {r["case"] for r in table} == cases
    for r in table:
        assert float(r["min paired"]) <= float(r["median paired ratio"]) <= float(r["max paired"])
        assert (r["floor ms"] != "") == (r["case"] in floored)
        if r["case"] in floored:
            assert float(r["floor ms"]) > 0 and float(r["ceiling"]) > 0
        assert float(r["base faults"]) >= 0 and float(r["other faults"]) >= 0
    assert "(smoke: n/a)" in out and "NOT met" not in out  # smoke shapes are not the targets'


@CPP
def test_only_filter_and_bad_arguments(tmp_path):
    rc, out, err = _run("--smoke", "--only", "softwta", "--csv", str(tmp_path / "t.csv"))
    assert rc == 0, out + err
    assert "softwta_update" in out and "pc_relax" not in out
    rc, out, err = _run("--only", "no such case", "--csv", str(tmp_path / "u.csv"))
    assert rc == 2 and "no case name contains" in err
    rc, out, err = _run("--rounds", "0", "--csv", str(tmp_path / "v.csv"))
    assert rc == 2 and "--rounds must be >= 1" in err


def test_record_gemms_replays_exactly_the_products_made():
    sys.path.insert(0, str(ROOT / "bench"))
    try:
        from cpu_ratios import record_gemms, replay
    finally:
        sys.path.remove(str(ROOT / "bench"))
    import torch

    a, b, out, acc = torch.randn(3, 4), torch.randn(4, 5), torch.empty(3, 5), torch.zeros(3, 5)

    def work():
        torch.mm(a, b, out=out)
        acc.addmm_(a, b)
        _ = (a @ b).relu()  # not a product: not recorded
        return torch.tanh(out)

    calls = record_gemms(work)
    assert len(calls) == 3
    assert torch.mm(a, b) is not None  # the patches are gone after the call
    assert "recorder" not in repr(torch.mm) and torch.Tensor.addmm_.__name__ == "addmm_"
    out.zero_()
    acc.zero_()
    replay(calls)()
    assert torch.allclose(out, a @ b) and torch.allclose(acc, a @ b)
