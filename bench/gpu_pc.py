"""bench/gpu.py rows for the pc family (placeholder until its ops land)."""

ANCHORS: dict = {}


def ops(smoke: bool, Op) -> list:
    return []
