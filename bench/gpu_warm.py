"""Compile-ahead helpers for bench/gpu.py and bench/gpu_tiles.py (``--warm-only --shard K/N``).

Triton compiles a kernel configuration the first time it is launched (and Triton 3.6 also
builds a C launcher for it with gcc), about a second or two each on the GPU machine, one at a
time inside one process. ``bench/gpu_session.sh``'s ``warm`` step therefore starts several
processes at once, each launching its share (every N-th item, from item K) of the rows or tile
configurations once, untimed and unchecked. They fill Triton's on-disk cache
(``TRITON_CACHE_DIR``, default ``~/.triton/cache``), which the timed steps that follow read.
"""
from __future__ import annotations

import argparse


def shard_arg(text: str) -> tuple[int, int]:
    """``"K/N"`` -> ``(K, N)`` with ``0 <= K < N`` (an argparse ``type``)."""
    try:
        k, n = (int(v) for v in text.split("/"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"--shard expects K/N (two integers), got {text!r}")
    if not 0 <= k < n:
        raise argparse.ArgumentTypeError(f"--shard K/N needs 0 <= K < N, got {text!r}")
    return k, n


def pick(items: list, shard: tuple[int, int] | None) -> list:
    """Every N-th item from item K (all of them without a shard): shards started together
    compile the front of the list first."""
    if shard is None:
        return list(items)
    k, n = shard
    return list(items)[k::n]
