"""GPU timing that reflects decoding: CUDA-graph replays over rotated weight copies.

``graph_time_ms`` captures a list of calls back to back in one CUDA graph and
returns the median replay time per call: no Python or launch overhead (as
under ``torch.compile(mode="reduce-overhead")``). Callers give each call its
own copy of the weights (``copies_for``), so the copies together exceed the L2
cache several times and the weights stream from HBM, as in a real model.
"""

from __future__ import annotations

import math
import statistics

import torch


def copies_for(bytes_per_call: int, l2_bytes: int, most: int = 256) -> int:
    """How many weight copies make 3x the L2 cache (at least 2, at most ``most``)."""
    return max(2, min(most, math.ceil(3 * l2_bytes / max(bytes_per_call, 1))))


def l2_bytes() -> int:
    return torch.cuda.get_device_properties(torch.cuda.current_device()).L2_cache_size


def graph_time_ms(calls, replays: int = 25) -> float:
    """Median time per call (ms) of ``calls`` captured back to back in one CUDA graph."""
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):  # warm up (compiles) outside the capture
        for _ in range(2):
            for call in calls:
                call()
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        for call in calls:
            call()
    graph.replay()
    torch.cuda.synchronize()
    times = []
    for _ in range(replays):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        graph.replay()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end) / len(calls))
    del graph
    return statistics.median(times)
