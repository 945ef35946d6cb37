"""bench/gpu.py's and bench/gpu_tiles.py's session modes (--warm-only, the compile-ahead step of
bench/gpu_session.sh, and gpu.py --profile), on the CPU: smoke shapes under the Triton
interpreter; and bench/gpu_tf32x3_forms.py with TF32 emulated."""
import argparse
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))
from gpu_warm import pick, shard_arg  # noqa: E402


def test_shard_arg_and_pick():
    assert shard_arg("2/5") == (2, 5)
    for bad in ("5/5", "-1/3", "1", "a/b", "1/0"):
        with pytest.raises(argparse.ArgumentTypeError, match="--shard"):
            shard_arg(bad)
    items = list(range(10))
    assert pick(items, None) == items
    shards = [pick(items, (k, 3)) for k in range(3)]
    assert shards == [[0, 3, 6, 9], [1, 4, 7], [2, 5, 8]]


def _run(script, *args, mode="--warm-only"):
    env = dict(os.environ, TRITON_INTERPRET="1", PYTHONUNBUFFERED="1")
    out = subprocess.run([sys.executable, f"bench/{script}", "--smoke", mode, *args],
                         cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    return out.returncode, out.stdout + out.stderr


def _listed(script, *args):
    rc, text = _run(script, *args)
    assert rc == 0, text
    n = int(re.search(r"warming (\d+)", text).group(1))
    done = re.findall(r"^\[\d+/\d+ +[\d.]+s\] (.*): ok$", text, flags=re.M)
    assert len(done) == n, text  # every item of the shard launched, none failed
    return done


def test_gpu_py_shards_cover_the_rows_once_new_rows_first():
    shards = [_listed("gpu.py", "--shard", f"{k}/3", "--first", "pc_relax[rows]", "--only", "pc_relax")
              for k in range(3)]
    every = [row for shard in shards for row in shard]
    assert len(every) == len(set(every)) > 3
    assert shards[0][0].startswith("pc_relax[rows]")  # --first: those rows lead
    rc, text = _run("gpu.py", "--only", "pc_relax")
    assert rc == 0, text
    assert int(re.search(r"warming (\d+)", text).group(1)) == len(every)


def test_gpu_tiles_shard():
    rows = _listed("gpu_tiles.py", "--shard", "1/4", "--only", "softwta")
    assert rows and all(r.startswith("softwta") for r in rows)


def test_gpu_py_profile_lists_each_sides_work():
    rc, text = _run("gpu.py", "--only", "hebbian_update[gha] B8", mode="--profile")
    assert rc == 0, text
    for side in ("triton", "eager"):
        m = re.search(rf"== hebbian_update\[gha\] B8 20->24 \[{side}\]: wall ([\d.]+) ms per call "
                      rf"\(profiled\), CPU busy ([\d.]+) ms\n((?:  .*\n)+)", text)
        assert m, text
        assert float(m.group(1)) > 0 and float(m.group(2)) > 0
    # the eager reference's GEMMs are among its ops (4 products: Y, Y^T X, Y^T Y, tril(.) W)
    assert re.search(r"\[eager\]:.*\n(?:  .*\n)*  aten::mm +4\.0 x", text), text


def test_gpu_py_host_profile_names_the_python_that_costs():
    """--host: host ms per plain call (no more than with the device), then cProfile's 15 top
    functions, each with calls and own / cumulative us per call."""
    rc, text = _run("gpu.py", "--only", "hebbian_update[gha] B8", mode="--host")
    assert rc == 0, text
    m = re.search(r"== hebbian_update\[gha\] B8 20->24: host ([\d.]+) ms per call \(no sync\), "
                  r"([\d.]+) ms with the device \(synced after 50\)\n((?:  .*\n)+)", text)
    assert m, text
    assert 0 < float(m.group(1)) <= float(m.group(2))
    lines = m.group(3).splitlines()
    assert len(lines) == 15
    assert all(re.search(r"[\d.]+ x +[\d.]+ us \(cum +[\d.]+\)$", ln) for ln in lines), text


def test_session_row_lists_name_existing_rows():
    """Every '|'-separated substring of gpu_session.sh's NEW_ROWS, HOST_ROWS and PROFILE_ROWS
    matches a row of gpu.py's full (GPU) table: a misspelt one would silently select nothing.
    The table is listed in a subprocess (gpu.py reads its arguments at import)."""
    code = (
        "import sys; sys.argv = ['gpu.py', '--smoke']; sys.path.insert(0, 'bench'); import gpu; "
        "print('\\n'.join(f'{o.name} {o.shape}' for o in gpu.build_ops(False)))")
    env = dict(os.environ, TRITON_INTERPRET="1")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True,
                         text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    names = out.stdout.splitlines()
    assert len(names) > 50
    script = (ROOT / "bench" / "gpu_session.sh").read_text()
    for var in ("NEW_ROWS", "HOST_ROWS", "PROFILE_ROWS"):
        m = re.search(var + r'=\$\{' + var + r':-"([^"]*)"\}', script)
        assert m, var
        for sub in m.group(1).split("|"):
            assert any(sub in n for n in names), (var, sub)


def test_gpu_tf32x3_forms_runs_and_every_form_is_the_product(tmp_path, capsys):
    """bench/gpu_tf32x3_forms.py on the CPU (TF32 emulated), tiny shape: every form gives a @ b.T
    (the split forms to float32 level there, tf32 to TF32's), and the CSV has one row per form."""
    import csv

    import gpu_tf32x3_forms as forms_script

    out = tmp_path / "forms.csv"
    assert forms_script.main(["--small", "--reps", "1", "--csv", str(out)]) == 0
    rows = list(csv.DictReader(out.open()))
    assert [r["form"] for r in rows] == ["fp32", "tf32", "kcat", "kcat-small-first", "two-gemms",
                                         "three-gemms"]
    errs = {r["form"]: float(r["rel err vs float64"]) for r in rows}
    assert errs["tf32"] > 1e-5 and all(errs[f] < 1e-6 for f in errs if f != "tf32")
    assert "kcat-small-first" in capsys.readouterr().out
