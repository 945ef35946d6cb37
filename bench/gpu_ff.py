"""bench/gpu.py rows for the ff family (placeholder until its ops land)."""

ANCHORS: dict = {}


def ops(smoke: bool, Op) -> list:
    return []
