"""bench/ tooling regressions found in review: bench/gpu_decide.py's SPLIT_K with a row whose
graph was not timed, and bench/gpu_session.sh printing every decision's headline (no GPU needed)."""
import importlib.util
import os
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
