"""bench/gpu.py rows for the reservoir family (placeholder until its ops land)."""

ANCHORS: dict = {}


def ops(smoke: bool, Op) -> list:
    return []
