"""bench/gpu_session.sh keeps within SESSION_T: a step's limit is cut to what is left, and a step
with too little left is skipped (a fake interpreter stands in for python: no GPU needed)."""
import os
import shutil
import subprocess
import tarfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "bench" / "gpu_session.sh"

FAKE_PY = """#!/usr/bin/env bash
case "$1" in bench/gpu*.py) sleep 30;; esac
"""


@pytest.mark.skipif(shutil.which("bash") is None or shutil.which("timeout") is None,
                    reason="needs bash and coreutils' timeout")
def test_steps_cut_to_session_budget(tmp_path):
    fake = tmp_path / "fakepy"
    fake.write_text(FAKE_PY)
    fake.chmod(0o755)
    env = dict(os.environ, PYTHON=str(fake), SESSION_T="9", RESERVE_T="0", MIN_STEP_T="1",
               WARM_T="2", WARM_GPU="2", WARM_TILES="1", NEW_T="2", HOST_T="1", PROFILE_T="100",
               BPALTS_DATA=str(tmp_path))
    out = subprocess.run(["bash", str(SCRIPT), str(tmp_path / "out")], cwd=ROOT, env=env,
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert any(line.startswith("warm rc 0 (limit 2s") for line in lines), out.stdout
    new = next(line for line in lines if line.startswith("new rc"))
    prof = next(line for line in lines if line.startswith("profile rc"))
    assert new.startswith("new rc 124 (limit 2s"), new  # killed at its own limit
    host = next(line for line in lines if line.startswith("host rc"))
    assert host.startswith("host rc 124 (limit 1s"), host
    # cut to what was left of SESSION_T: 9 s less the warm, new and host steps' 2 + 2 + 1 s and
    # the packing after each (a second or two more on a loaded machine), not its own 100 s
    assert prof.startswith("profile rc 124 (limit "), prof
    limit = int(prof.split("(limit ")[1].split("s")[0])
    assert 1 <= limit <= 4, prof
    for step in ("gpu", "tiles", "acc"):
        assert any(line.startswith(f"{step} skipped") for line in lines), out.stdout
    # everything comes back as one archive (the device tool returns at most 8 files)
    with tarfile.open(tmp_path / "out" / "gpu_session.tgz") as tar:
        names = {Path(n).name for n in tar.getnames()}
    assert {"warm.log", "new.log", "host.log", "profile.log"} <= names, names
    assert not any(n.startswith("warm_") for n in names), names  # the shard logs, merged
