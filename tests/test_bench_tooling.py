"""bench/ tooling regressions found in review: bench/gpu_decide.py's SPLIT_K with a row whose
graph was not timed, bench/gpu_session.sh printing every decision's headline, bench/gpu.py's
check with a non-finite spec, and bench/README.md naming every Hebbian rule timed (no GPU
needed)."""
import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _gpu_decide():
    spec = importlib.util.spec_from_file_location("gpu_decide_tooling", ROOT / "bench" / "gpu_decide.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod  # dataclasses look their module up there
    spec.loader.exec_module(mod)
    return mod


def test_split_k_with_an_untimed_graph_at_a_shared_shape(tmp_path, capsys):
    """Two winning split rows at the same B * N * F (fp32 and tf32), one whose graph column is
    '-' (capture failed or skipped): the choice must not compare None with a float."""
    csv = tmp_path / "split.csv"
    csv.write_text(
        "op,shape,check,triton ms,triton-graph ms,target ms\n"
        "softwta_update[cublas],B1024 4096->4096,ok,1.504,1.496,-\n"
        "softwta_update[cublas-split2],B1024 4096->4096,ok,1.400,1.300,-\n"
        "softwta_update[cublas] tf32,B1024 4096->4096,ok,0.429,0.383,-\n"
        "softwta_update[cublas-split2] tf32,B1024 4096->4096,ok,0.400,-,-\n")
    assert _gpu_decide().main([str(csv)]) == 0
    out = capsys.readouterr().out
    assert "kernels/softwta_update.py SPLIT_K = 2 " in out, out


FAKE_PY = """#!/usr/bin/env bash
case "$1" in
bench/gpu_decide.py) exec "{python}" "$@" ;;
bench/gpu.py) while [ $# -gt 0 ]; do [ "$1" = --csv ] && cp "{fixture}" "$2"; shift; done ;;
esac
"""


@pytest.mark.skipif(shutil.which("bash") is None or shutil.which("timeout") is None,
                    reason="needs bash and coreutils' timeout")
def test_session_prints_every_decision_headline(tmp_path):
    """The decisions the session prints to stdout (what the device tool's output tail shows)
    include every switch's headline line, not only some of them above others' detail lines."""
    fixture = ROOT / "bench" / "results" / "2026-11-28-h100" / "run1_new.csv"
    fake = tmp_path / "fakepy"
    fake.write_text(FAKE_PY.format(python=sys.executable, fixture=fixture))
    fake.chmod(0o755)
    env = dict(os.environ, PYTHON=str(fake), STEPS="new", BPALTS_DATA=str(tmp_path))
    out = subprocess.run(["bash", str(ROOT / "bench" / "gpu_session.sh"), str(tmp_path / "out")],
                         cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    decide = (tmp_path / "out" / "decide.txt").read_text()
    printed = out.stdout.split("=== decisions (bench/gpu_decide.py)\n", 1)[1]
    headlines = [ln for ln in decide.split("\n\n", 1)[1].splitlines() if ln and not ln.startswith("  ")]
    assert any(ln.startswith("FULL_GRAPHS_MAX = ") for ln in headlines), decide
    for ln in headlines:
        assert ln in printed, ln


# bench/gpu.py reads its arguments and sets TRITON_INTERPRET at import: load it in a subprocess.
# Each case: (Triton output, spec output) against a reference output of 2 * ones(3).
_CHECK_CODE = r"""
import json, sys
sys.argv = ['gpu.py', '--smoke']
sys.path.insert(0, 'bench')
import gpu, torch

def row(tri, spec):
    op = gpu.Op('x', 's', lambda d, g, lr: (torch.ones(3),), lambda a: a * 2, lambda a: tri(a),
                spec=lambda a: spec(a))
    return gpu.check(op, 0, gpu.Recorder(), 'x')['status']

nan = lambda a: torch.full_like(a, float('nan'))
print(json.dumps({
    # a broken (non-finite) spec must not make the check pass anything
    'nan_triton_nan_spec': row(nan, nan),
    'far_triton_nan_spec': row(lambda a: a * 5, nan),
    # a finite spec still widens the tolerance to SPEC_SLACK x its distance (the design)
    'near_spec_widens': row(lambda a: a * 2 * (1 + 0.015), lambda a: a * 2 * (1 + 0.01)),
    'beyond_spec_fails': row(lambda a: a * 2 * (1 + 0.05), lambda a: a * 2 * (1 + 0.01)),
}))
"""


def test_gpu_check_with_a_non_finite_spec_can_still_fail():
    """bench/gpu.py's check widened a row's tolerance to SPEC_SLACK * rel_err(spec, ref); a
    non-finite spec gives rel_err = inf, so the tolerance became inf and the row said "ok"
    whatever Triton returned (even all-NaN: inf <= inf). The ``check`` column, the exit status
    and gpu_decide's "usable" rows all rest on it, so a broken tf32 spec would have passed
    every tf32 row and let them win contests."""
    env = dict(os.environ, TRITON_INTERPRET="1")
    out = subprocess.run([sys.executable, "-c", _CHECK_CODE], cwd=ROOT, env=env, capture_output=True,
                         text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    status = json.loads(out.stdout.strip().splitlines()[-1])
    assert status["nan_triton_nan_spec"] == "FAIL", status
    assert status["far_triton_nan_spec"] == "FAIL", status
    assert status["near_spec_widens"] == "ok", status
    assert status["beyond_spec_fails"] == "FAIL", status


def test_bench_readme_names_every_hebbian_rule_benchmarked():
    """bench/README.md's section on test_bench_hebbian.py said it times rules gha, oja and hpca
    only; the file times all seven (RULES), so numbers quoted for nlpca_sym, bcm, instar or
    krotov looked as if they came from somewhere else."""
    text = (ROOT / "bench" / "README.md").read_text()
    section = text.split("## CPU microbenchmarks (`test_bench_hebbian.py`)", 1)[1].split("\n\n", 2)[1]
    src = (ROOT / "bench" / "test_bench_hebbian.py").read_text()
    rules = re.search(r"^RULES = \(([^)]*)\)", src, re.M).group(1)
    for rule in re.findall(r'"(\w+)"', rules):
        assert f"`{rule}`" in section, (rule, section)
