"""The tuner's candidate set: how many configs it tries, and how each family fared in a tuning log.

    python benchmarks/candidates.py                  # configs per M bucket at 8192 x 8192 on a 132-SM sm_90 GPU
                                                     # (and how many are the Gluon kernel's, by variant)
    python benchmarks/candidates.py --log benchmarks/results/gpu_check_nvidia_h200_async.log
        # each family's time against the fastest candidate of its shape, on the three goal shapes

A family is a config without its split (the tuner tries several splits of each). A family's range
is its fastest split's time over the fastest candidate's, across the shapes where it ran: the
evidence ``kernels/configs.py`` cites for the families it dropped.
"""

from __future__ import annotations

import argparse
import collections
import re
import sys

import torch

from awq_ao.kernels import configs, int4_wgmma

GOAL_SHAPES = ((8192, 8192), (14336, 4096), (4096, 14336))  # (N, K): 8192^2 and Llama-3-8B gate/up, down
LINE = re.compile(r"\s+M=(\d+) N=(\d+) K=(\d+) g=(\d+) KernelConfig\((.*)\): ([\d.]+) us")


def candidates(n: int, k: int, group: int, sms: int, m_values) -> dict[int, list]:
    """{M bucket: the candidate configs} for an N x K weight on a GPU with ``sms`` SMs."""
    saved = configs.sm_count, int4_wgmma.capability_major, int4_wgmma.HAVE_GLUON
    configs.sm_count = lambda index: sms  # candidate splits follow the SM count; no GPU needed
    int4_wgmma.capability_major = lambda index: 9  # an sm_90 GPU (the H100 / H200), with Gluon
    int4_wgmma.HAVE_GLUON = True
    try:
        device = torch.device("cuda", 0)
        return {m: configs.candidate_configs(m, n, k, group, device) for m in m_values}
    finally:
        configs.sm_count, int4_wgmma.capability_major, int4_wgmma.HAVE_GLUON = saved


def count(n: int, k: int, group: int, sms: int, m_values) -> dict[int, int]:
    """{M bucket: number of candidate configs} for an N x K weight on a GPU with ``sms`` SMs."""
    return {m: len(cfgs) for m, cfgs in candidates(n, k, group, sms, m_values).items()}


def family_ranges(lines, shapes=GOAL_SHAPES) -> dict[int, list[tuple[float, float, str]]]:
    """{M: [(lowest, highest ratio to the fastest candidate of the shape, family), ...]} from ``tune(verbose=True)``
    lines ("  M=1 N=8192 K=8192 g=128 KernelConfig(...): 17.5 us"), best family first."""
    times = collections.defaultdict(dict)  # (M, family) -> {shape: fastest us}
    for line in lines:
        hit = LINE.match(line)
        if not hit or (int(hit.group(2)), int(hit.group(3))) not in shapes:
            continue
        m, shape, us = int(hit.group(1)), (int(hit.group(2)), int(hit.group(3))), float(hit.group(6))
        family = ", ".join(f for f in hit.group(5).split(", ") if not f.startswith("split_k="))
        times[(m, family)][shape] = min(us, times[(m, family)].get(shape, float("inf")))
    fastest = collections.defaultdict(lambda: float("inf"))
    for (m, _), by_shape in times.items():
        for shape, us in by_shape.items():
            fastest[(m, shape)] = min(fastest[(m, shape)], us)
    ranges = collections.defaultdict(list)
    for (m, family), by_shape in times.items():
        ratios = [us / fastest[(m, shape)] for shape, us in by_shape.items()]
        ranges[m].append((min(ratios), max(ratios), family))
    return {m: sorted(rows) for m, rows in sorted(ranges.items())}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--log", default=None, help="a gpu_check.py / bench_kernels.py --tune --verbose log")
    parser.add_argument("--n", type=int, default=8192)
    parser.add_argument("--k", type=int, default=8192)
    parser.add_argument("--group", type=int, default=128)
    parser.add_argument("--sms", type=int, default=132, help="SMs of the GPU (132: H100 SXM, H200)")
    parser.add_argument("--m", type=int, nargs="+", default=[1, 2, 4, 8, 16, 32, 64, 128, 512])
    args = parser.parse_args(argv)
    if args.log is None:
        print(f"candidate configs for {args.n} x {args.k}, group {args.group}, {args.sms} SMs")
        for m, cfgs in candidates(args.n, args.k, args.group, args.sms, args.m).items():
            gluon = collections.Counter(configs.gluon_variant(c) for c in cfgs if c.kind == "wgmma")
            staged = sum(c.kind == "staged" for c in cfgs)
            print(f"M={m}: {len(cfgs)}" + (" (Gluon kernel: " + ", ".join(f"{v} {gluon[v]}" for v in
                                                                          ("wgmma", "mma", "late")) + ")"
                                           if gluon else "") + (f" (staged GEMV {staged})" if staged else ""))
        return 0
    with open(args.log) as f:
        ranges = family_ranges(f)
    if not ranges:
        print(f"error: no tuning lines for the goal shapes in {args.log}", file=sys.stderr)
        return 1
    for m, rows in ranges.items():
        print(f"M={m}")
        for low, high, family in rows:
            print(f"  {low:.2f}-{high:.2f}  {family}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
