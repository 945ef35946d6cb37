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
    # 2 rounds x 2 backends per case, every case of the four families
    assert len(rows) == 4 * len(cases) and len(cases) >= 10
    assert {r["backend"] for r in rows} == {"base", "other"} and all(float(r["ms"]) > 0 for r in rows)
    for family in ("hebbian_update[gha]", "softwta_update", "pc_relax", "reservoir_run"):
        assert any(c.startswith(family) for c in cases), family
    table = list(csv.DictReader(summary.open()))
    assert {r["case"] for r in table} == cases
    for r in table:
        assert float(r["min paired"]) <= float(r["median paired ratio"]) <= float(r["max paired"])
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
