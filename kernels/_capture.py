"""CUDA-graph capture shared by the kernels' cached plans (imported as ``bpalts.kernels._capture``)."""
from __future__ import annotations

import torch


def capture(fn):
    """A CUDA graph of ``fn()``'s launches, captured on a side stream that first waits for the
    current stream's work (and that the current stream then waits for). ``fn`` must not sync:
    capture records its launches without running them."""
    g = torch.cuda.CUDAGraph()
    s = torch.cuda.Stream()
    s.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(s):
        with torch.cuda.graph(g, stream=s):
            fn()
    torch.cuda.current_stream().wait_stream(s)
    return g
