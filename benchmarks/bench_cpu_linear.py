"""CPU: awq_ao's int4 linear against dense bf16 and fp32 F.linear.

    python benchmarks/bench_cpu_linear.py [--repeats 7] [--out benchmarks/results/cpu_linear.md]

For each shape (N out x K in) and M (rows of x) it prints the median time of:
dense fp32 F.linear, dense bf16 F.linear, awq_ao int4 (bf16 activations,
group 128, or 64 where K is not a multiple of 128) called eagerly ("op": the
path ``ops.int4_linear`` dispatches to, with the subclass's Python overhead)
and as a ``torch.compile``d one-linear module (which adds the compiled
wrapper's fixed per-call overhead, paid once per forward in a whole model),
both int4 paths on their own ("dequant+bf16": the op ``awq_ao::int4_linear_dequant``, which on CPU
dequantizes a block of rows at a time into reused buffers, ``awq_ao/dequant_linear.py``), the reference it
replaced on CPU ("whole-weight": ``quant.dequantize`` of the whole weight, then ``F.linear``), and the ratio
bf16 / awq_ao op. Everything
runs side by side in one process; the machine is shared and noisy, so read the
ratios, not the absolute times.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

import torch
import torch.nn.functional as F

import awq_ao  # noqa: F401
from awq_ao import AWQInt4Tensor, ops, quant

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # machine.py
from machine import cpu_description  # noqa: E402

SHAPES = [  # (name, out N, in K)
    ("4096x4096", 4096, 4096),
    ("smollm2 q/o 576->576", 576, 576),
    ("smollm2 k/v 576->192", 192, 576),
    ("smollm2 gate/up 576->1536", 1536, 576),
    ("smollm2 down 1536->576", 576, 1536),
]


def interleaved_medians(fns: dict, repeats: int, min_time: float = 0.03) -> dict:
    """Median per-call ms of each function, measured in interleaved rounds.

    Each round times every function once (a batch of calls sized to ``min_time``),
    so drifts of a shared, noisy machine hit all variants alike.
    """
    batch = {}
    for name, fn in fns.items():
        fn()
        fn()
        start, calls = time.perf_counter(), 0
        while time.perf_counter() - start < min_time:
            fn()
            calls += 1
        batch[name] = max(1, calls)
    samples = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            t0 = time.perf_counter()
            for _ in range(batch[name]):
                fn()
            samples[name].append((time.perf_counter() - t0) / batch[name] * 1e3)
    return {name: statistics.median(v) for name, v in samples.items()}


def bench_shape(n: int, k: int, m: int, repeats: int) -> dict:
    group = 128 if k % 128 == 0 else 64
    w32 = torch.randn(n, k) * 0.02
    w16 = w32.bfloat16()
    qw = AWQInt4Tensor.from_float(w16, 4, group)
    lin = torch.nn.Linear(k, n, bias=False, dtype=torch.bfloat16)
    lin.weight = torch.nn.Parameter(qw, requires_grad=False)
    compiled = torch.compile(lin, fullgraph=True)
    x32 = torch.randn(m, k)
    x16 = x32.bfloat16()
    fns = {
        "fp32": lambda: F.linear(x32, w32),
        "bf16": lambda: F.linear(x16, w16),
        "int4_eager": lambda: F.linear(x16, qw),
        "int4_compiled": lambda: compiled(x16),
        "dequant": lambda: torch.ops.awq_ao.int4_linear_dequant(x16, qw.qdata, qw.scale, qw.zero_point, None, group, k),
        "dequant_whole": lambda: F.linear(x16, quant.dequantize(quant.unpack_int4(qw.qdata), qw.scale, qw.zero_point,
                                                                group, k, torch.bfloat16)),
    }
    if qw.cpu_packed is not None:
        fns["kernel"] = lambda: ops._cpu_int4_mm(x16, qw)
    with torch.no_grad():
        row = interleaved_medians(fns, repeats)
    row.setdefault("kernel", float("nan"))
    row["path"] = "int4 kernel" if ops.cpu_fast_path_applies(x16, qw) else "dequant+bf16"
    row["group"] = group
    torch._dynamo.reset()
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--ms", default="1,16", help="comma-separated M values")
    parser.add_argument("--crossover", action="store_true",
                        help="only 4096x4096 at M = 1..512: where the int4 kernel stops paying")
    parser.add_argument("--out", default=None, help="also write the table to this file")
    args = parser.parse_args()
    ms = [int(v) for v in args.ms.split(",")]
    lines = [
        f"torch {torch.__version__}, {cpu_description()}",
        "",
        "| shape (N x K) | M | group | fp32 ms | bf16 ms | awq_ao op ms | awq_ao compiled module ms | path taken | int4 kernel ms | dequant+bf16 ms | whole-weight dequant+bf16 ms | bf16 / awq_ao op |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    print("\n".join(lines), flush=True)
    shapes = SHAPES[:1] if args.crossover else SHAPES
    if args.crossover:
        ms = [1, 16, 64, 128, 256, 512]
    for name, n, k in shapes:
        for m in ms:
            r = bench_shape(n, k, m, args.repeats)
            line = (
                f"| {name} | {m} | {r['group']} | {r['fp32']:.3f} | {r['bf16']:.3f} | {r['int4_eager']:.3f} | "
                f"{r['int4_compiled']:.3f} | {r['path']} | {r['kernel']:.3f} | {r['dequant']:.3f} | {r['dequant_whole']:.3f} | "
                f"{r['bf16'] / r['int4_eager']:.2f}x |"
            )
            print(line, flush=True)
            lines.append(line)
    if args.out:
        with open(args.out, "w") as f:
            f.write("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
