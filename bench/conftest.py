"""pytest configuration for the microbenchmarks in bench/ (not collected by the default run).

- registers the ``large`` marker (the big shapes; deselect with ``-m "not large"``);
- adds torch / thread / backend versions to the report header;
- after pytest-benchmark's table, prints per group the median of each backend and the ratio
  reference / other backend (> 1 means the other backend is faster). Best effort: it reads
  pytest-benchmark's session object and stays silent if that is not there.
"""
from __future__ import annotations

import pytest


def pytest_configure(config):
    config.addinivalue_line(
        "markers", "large: big shapes, ~1-2 s per call on the CPU reference (deselect with -m 'not large')"
    )


def pytest_report_header(config):
    try:
        import torch

        import bpalts

        info = bpalts.info(print_it=False)
        return (
            f"bpalts {info['bpalts']}, torch {info['torch']}, torch threads {info['torch_threads']}, "
            f"cpp built {info['cpp_built']} (OpenMP threads {info['cpp_openmp_threads']}, "
            f"SIMD {info.get('cpp_simd')}), "
            f"CPU backends {info['backends_cpu']}, MKL {torch.backends.mkl.is_available()}"
        )
    except Exception as exc:  # a header must never break the run
        return f"bpalts info unavailable: {type(exc).__name__}: {exc}"


def _ratio_lines(benchmarks) -> list[str]:
    groups: dict[str, dict[str, float]] = {}
    for b in benchmarks:
        stats = getattr(b, "stats", None)
        backend = (getattr(b, "extra_info", None) or {}).get("backend")
        if not b or stats is None or backend is None:
            continue
        groups.setdefault(b.group or "", {})[backend] = stats.median
    lines = []
    for group in sorted(groups):
        med = groups[group]
        parts = [f"{k} {v * 1e3:.2f} ms" for k, v in sorted(med.items())]
        ref = med.get("reference")
        ratios = [
            f"reference/{k} = {ref / v:.2f}x"
            for k, v in sorted(med.items())
            if k != "reference" and ref is not None and v > 0
        ]
        lines.append(f"{group}: " + ", ".join(parts) + ("  ->  " + ", ".join(ratios) if ratios else ""))
    return lines


@pytest.hookimpl(trylast=True)
def pytest_terminal_summary(terminalreporter, config):
    session = getattr(config, "_benchmarksession", None)
    if session is None or getattr(session, "disabled", False):
        return
    try:
        lines = _ratio_lines(getattr(session, "benchmarks", []) or [])
    except Exception as exc:  # never fail the run over a summary
        terminalreporter.write_line(f"(median ratios unavailable: {type(exc).__name__}: {exc})")
        return
    if lines:
        terminalreporter.section("median ratios (reference / backend; > 1: backend faster)")
        for line in lines:
            terminalreporter.write_line(line)
