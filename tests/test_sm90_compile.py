"""Every Triton kernel configuration that bench/gpu.py's smoke rows launch, plus the GPU-only
persistent reservoir kernels, compiles for NVIDIA sm_90 (H100 / H200) with this machine's Triton.

The interpreter the other Triton tests run under executes a kernel's Python but never compiles
it, so an op or layout a GPU backend rejects would pass them all. ``bench/sm90_compile.py``
records the launches (skipped) and compiles each distinct configuration with the ``ptxas`` that
Triton's wheel bundles; no GPU is needed.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _ptxas():
    triton = pytest.importorskip("triton")
    path = Path(triton.__file__).parent / "backends" / "nvidia" / "bin" / "ptxas"
    if not path.exists():
        pytest.skip("Triton's bundled ptxas is missing (not an NVIDIA build of Triton)")
    return path


def test_every_kernel_compiles_for_sm90(tmp_path):
    _ptxas()
    out = tmp_path / "sm90.json"
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    proc = subprocess.run([sys.executable, str(ROOT / "bench" / "sm90_compile.py"), "--smoke",
                           "--json", str(out)], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=900)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    data = json.loads(out.read_text())
    results = data["results"]
    assert data["arch"] == 90 and all(r["ok"] for r in results)
    kernels = {r["kernel"] for r in results}
    # the kernels of every op family were reached (a row that stopped launching would shrink this)
    for name in ("_matmul_kernel", "_apply_kernel", "_rank_kernel", "_sparse_apply_kernel",
                 "_forward_kernel", "_update_kernel", "_gate_kernel", "_fwd_kernel", "_bwd_kernel",
                 "_gemv_step_kernel", "_gemm_step_kernel", "_persistent_kernel",
                 "_ll_resident_kernel", "_coef_kernel", "_grad_kernel"):
        assert name in kernels, name
    assert all(r["regs"] > 0 for r in results)
    # the register-resident reservoir kernels keep W's 16 x 2048 slice without spilling
    resident = [r for r in results if r["kernel"] == "_ll_resident_kernel" and r["constexprs"]["K_PAD"] == 2048]
    assert resident and resident[0]["stack"] == 0 and resident[0]["local"] == 0
    # the SASS instruction mix: fp32 (ieee) products are FFMA, tensor-core ones HMMA / HGMMA
    def mix(kernel, **constexprs):
        return next(r["mix"] for r in results if r["kernel"] == kernel
                    and all(r["constexprs"].get(k) == v for k, v in constexprs.items()))
    assert mix("_gemm_step_kernel", PREC="ieee")["FFMA"] > 0
    tc = mix("_gemm_step_kernel", PREC="tf32x3")
    assert tc["HMMA"] + tc["HGMMA"] > 0
