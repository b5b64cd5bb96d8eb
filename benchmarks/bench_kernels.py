"""Timing table of the CUDA int4 linear against bf16 cuBLAS and tinygemm.

    python benchmarks/bench_kernels.py                 # full table, CUDA GPU
    python benchmarks/bench_kernels.py --tune          # tune each shape's configs before timing it
    python benchmarks/bench_kernels.py --quick         # 3 shapes, M in {1, 16, 128}

For each shape (N x K: out x in features) and M, with group 128 and bf16
activations, it times

* ``awq_ao``: ``F.linear(x, w)`` on an ``AWQInt4Tensor`` (the whole op: dispatch,
  GEMV / GEMM, split-K reduce);
* ``from L2``: the same call on one weight copy every time, so the weight stays in
  the L2 cache where it fits ("n/a" where it does not): what the kernel costs
  without HBM. Near ``awq_ao``, the kernel is bound by its own execution; far
  below it, by memory;
* ``int4 read``: a kernel that only reads the same int4 words (``bench_layout.py``'s
  read kernel, row-major 128-column tiles, the faster of splits 8 and 16), over
  rotated copies: the floor for any kernel that reads these bytes (scales and
  zeros, 5% more bytes at group 128, not included); once per shape, where N and K
  are multiples of 128;
* ``bf16``: ``F.linear`` on the dense bf16 weight (cuBLAS);
* ``tinygemm``: ``aten._weight_int4pack_mm`` (where K is a multiple of the group).

How (``awq_ao/kernels/timing.py``): each implementation is captured in one CUDA
graph of R back-to-back calls on R different copies of the weight (R chosen so
the copies are more than 3x the L2 cache, at most 256), the graph is replayed
25 times, and the median replay time divided by R is the time per call. (An
eager ``triton.testing.do_bench`` of a few-microsecond kernel measures Python
and launch overhead instead: the first GPU run here tuned on it and picked
configs by launch count.) Rotating copies keeps the weights
coming from HBM, as in a real decode step, and the graph removes Python and
launch overhead, as ``torch.compile(mode="reduce-overhead")`` does. Effective
GB/s counts the bytes each call must move (weights with their scales and
zeros, x and y, each once); the last column divides ours by the card's
device-to-device copy bandwidth (read + write), measured at the start. A
read-mostly kernel can exceed it: dense bf16 GEMV reads faster than a copy
moves, so the bf16 GB/s column is the practical ceiling.
"""

from __future__ import annotations

import argparse
import datetime
import os
import sys
from typing import Optional

import torch
import torch.nn.functional as F

import awq_ao  # noqa: F401
from awq_ao import AWQInt4Tensor
from awq_ao.kernels.timing import copies_for, graph_time_ms

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # bench_layout's read kernel

GROUP = 128
SHAPES = [  # (label, N, K); the goal shapes first, so a run cut short has those
    ("8192->8192", 8192, 8192),
    ("Llama-3-8B gate/up 4096->14336", 14336, 4096),
    ("Llama-3-8B down 14336->4096", 4096, 14336),
    ("Llama-3-8B q/o 4096->4096", 4096, 4096),
    ("Llama-3-8B k/v 4096->1024", 1024, 4096),
    ("SmolLM2 q/o 576->576", 576, 576),
    ("SmolLM2 k/v 576->192", 192, 576),
    ("SmolLM2 gate/up 576->1536", 1536, 576),
    ("SmolLM2 down 1536->576", 576, 1536),
]
M_VALUES = [1, 2, 4, 8, 16, 32, 64, 128, 512]
QUICK_SHAPES = [SHAPES[3], SHAPES[2], SHAPES[0]]
QUICK_M = [1, 16, 128]


def copy_bandwidth_gbs(nbytes: int = 1 << 30) -> float:
    """Device-to-device copy bandwidth (bytes read + written per second), median of 20 graph replays."""
    src = torch.empty(nbytes, dtype=torch.uint8, device="cuda").random_()
    dst = torch.empty_like(src)
    ms = graph_time_ms([lambda: dst.copy_(src)], replays=20)
    return 2 * nbytes / (ms * 1e-3) / 1e9


def tinygemm_weight(qw: AWQInt4Tensor):
    """(packed int4, scales_and_zeros) for aten._weight_int4pack_mm, same values as qw (w = (c - 8) s + zero)."""
    from awq_ao import quant

    q = quant.unpack_int4(qw.qdata)[:, : qw.in_features].to(torch.int32)  # [N, K]
    packed = ((q[:, ::2] << 4) | q[:, 1::2]).to(torch.uint8)
    w_packed = torch.ops.aten._convert_weight_to_int4pack(packed, 8)
    s = qw.scale.float()
    zero = (8 - qw.zero_point.float()) * s
    scales_and_zeros = torch.stack([s.t(), zero.t()], dim=-1).to(torch.bfloat16).contiguous()
    return w_packed, scales_and_zeros


def bench_shape(n: int, k: int, m: int, l2_bytes: int, device: str = "cuda", timer=graph_time_ms) -> dict:
    """Times (ms, by ``timer`` over a list of calls) of awq_ao from HBM and from L2, bf16 and tinygemm for one
    shape; bytes each must move."""
    dtype = torch.bfloat16
    w = torch.randn(n, k, dtype=dtype, device=device) * 0.02
    qw = AWQInt4Tensor.from_float(w, 4, GROUP)
    k_pad = qw.qdata.shape[1] * 2
    act_bytes = 2 * (m * k + m * n)
    bytes_int4 = n * k_pad // 2 + n * (k_pad // GROUP) * 3 + act_bytes
    bytes_bf16 = 2 * n * k + act_bytes
    out = {"bytes_int4": bytes_int4, "bytes_bf16": bytes_bf16}

    reps = copies_for(bytes_int4, l2_bytes)
    xs = [torch.randn(m, k, dtype=dtype, device=device) for _ in range(reps)]
    qws = [AWQInt4Tensor.from_parts(qw.qdata.clone(), qw.scale.clone(), qw.zero_point.clone(), 4, GROUP, k)
           for _ in range(reps)]
    out["awq_ao"] = timer([lambda x=x, q=q: F.linear(x, q) for x, q in zip(xs, qws)])
    if bytes_int4 < l2_bytes:  # one weight every call: it stays in L2
        out["awq_ao_l2"] = timer([lambda x=x, q=qws[0]: F.linear(x, q) for x in xs])
    del qws

    reps_dense = copies_for(bytes_bf16, l2_bytes)
    ws = [w.clone() for _ in range(reps_dense)]
    xs_dense = [xs[i % len(xs)] for i in range(reps_dense)]
    out["bf16"] = timer([lambda x=x, w=w: F.linear(x, w) for x, w in zip(xs_dense, ws)])
    del ws

    if k % GROUP == 0 and hasattr(torch.ops.aten, "_weight_int4pack_mm"):
        try:
            packed, sz = tinygemm_weight(qw)
            tiny = [(packed.clone(), sz.clone()) for _ in range(reps)]
            out["tinygemm"] = timer(
                [lambda x=x, p=p, s=s: torch.ops.aten._weight_int4pack_mm(x, p, GROUP, s)
                 for x, (p, s) in zip(xs, tiny)]
            )
        except RuntimeError as err:  # shapes tinygemm does not take
            out["tinygemm_error"] = str(err).splitlines()[0][:80]
    return out


def path_label(m: int, n: int, k: int, device: torch.device = torch.device("cuda")) -> str:
    """The kernel and tile awq_ao runs for this shape, short: e.g. ``gemv 128x128 r2 s8 pf``, ``gemv 64x128 w1 ring3
    s8 fused`` (warps where not 4 for a ring, ring depth, split-K summed in the kernel), ``staged 64x256 w2 s8`` (the
    staged GEMV and its warps), ``wgmma 64x128 mma.sync late ...``, ``... cap64`` (a register cap), ``... l2 32``
    (tiles asked of L2 at the start), ``... natural`` (the GEMM in column order)."""
    from awq_ao.kernels import select_config

    k_pad = -(-k // GROUP) * GROUP
    cfg = select_config(m, n, k_pad, GROUP, device)
    label = f"{cfg.kind} {cfg.block_n}x{cfg.block_k}"
    if cfg.kind == "gemm":
        label += f" m{cfg.block_m}" + (" swap" if cfg.swap_ab else "")
    if cfg.kind == "gemv" and cfg.block_m > 1:
        label += f" r{cfg.block_m}"
    if cfg.kind == "gemv" and cfg.num_stages >= 3:
        label += f" w{cfg.num_warps} ring{cfg.num_stages}"
    if cfg.kind == "staged":
        label += f" w{cfg.num_warps}"
    label += (" mma.sync" if cfg.mma_sync else "") + (" late" if cfg.late_dequant else "")
    if cfg.split_k > 1:
        label += f" s{cfg.split_k}" + (" fused" if cfg.fused_reduce else "")
    label += "" if not cfg.prefetch else " pf" if cfg.prefetch == 1 else f" pf{cfg.prefetch}"
    label += f" cap{cfg.max_registers}" if cfg.max_registers else ""
    label += f" l2 {cfg.l2_prefetch}" if cfg.l2_prefetch else ""
    return label + (" natural" if cfg.natural_order else "")


READ_SPLITS = (8, 16)  # the read kernel's splits (bench_layout.py: the fastest at 8192 x 8192 and 14336 x 4096)


def int4_read_ms(n: int, k: int, l2_bytes: int, device: str = "cuda", timer=graph_time_ms) -> Optional[float]:
    """ms of ``bench_layout.py``'s read kernel over N x K int4 words (row-major, 128-column tiles, the faster
    of READ_SPLITS) on rotated copies; None where N or K is not a multiple of 128."""
    import bench_layout

    if n % bench_layout.BLOCK_N or k % 128:
        return None
    words = torch.randint(-2**31, 2**31 - 1, (n, k // 8), dtype=torch.int32, device=device)
    copies = [words.clone() for _ in range(copies_for(words.numel() * 4, l2_bytes))]
    times = []
    for split in READ_SPLITS:
        outs = [bench_layout.read_sum(c, "row-major", 128, split) for c in copies]
        times.append(timer([lambda c=c, o=o, split=split: bench_layout.read_sum(c, "row-major", 128, split, o)
                            for c, o in zip(copies, outs)]))
    return min(times)


TABLE_HEAD = [
    "| shape | N x K | M | awq_ao us | from L2 us | int4 read us | bf16 us | tinygemm us | vs bf16 | vs tinygemm "
    "| awq_ao GB/s | bf16 GB/s | awq_ao / copy BW | awq_ao path |",
    "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
]


def _us(ms: Optional[float]) -> str:
    return "n/a" if ms is None else f"{ms * 1e3:.1f}"


def format_row(label: str, n: int, k: int, m: int, r: dict, read_ms: Optional[float], copy_gbs: float,
               path: str) -> str:
    """One markdown row of TABLE_HEAD from ``bench_shape``'s results ``r`` (ms) and the shape's read time."""
    ours, dense, tiny = r["awq_ao"], r["bf16"], r.get("tinygemm")
    gbs = r["bytes_int4"] / (ours * 1e-3) / 1e9
    gbs_dense = r["bytes_bf16"] / (dense * 1e-3) / 1e9
    return (f"| {label} | {n} x {k} | {m} | {_us(ours)} | {_us(r.get('awq_ao_l2'))} | {_us(read_ms)} | "
            f"{_us(dense)} | {_us(tiny)} | {dense / ours:.2f}x | {'n/a' if tiny is None else f'{tiny / ours:.2f}x'} | "
            f"{gbs:.0f} | {gbs_dense:.0f} | {gbs / copy_gbs:.0%} | {path} |")


def run_table(shapes, m_values, copy_gbs: float, sink=None) -> list[str]:
    """The markdown rows (no head); each is also printed and passed to ``sink`` (if given) as soon as it is timed."""
    l2_bytes = torch.cuda.get_device_properties(0).L2_cache_size
    rows = []
    for label, n, k in shapes:
        read_ms = int4_read_ms(n, k, l2_bytes)
        for m in m_values:
            rows.append(format_row(label, n, k, m, bench_shape(n, k, m, l2_bytes), read_ms, copy_gbs,
                                   path_label(m, n, k)))
            print(rows[-1], flush=True)
            if sink is not None:
                sink(rows[-1])
    return rows


def tune_for(shapes, m_values, save_to: str = None, verbose: bool = False) -> None:
    """Tune shape by shape; with ``save_to``, rewrite the JSON table after each (a run cut short keeps its work)."""
    from awq_ao import kernels

    for label, n, k in shapes:
        results = kernels.tune([(m, n, k, GROUP) for m in m_values], verbose=verbose)
        for (bucket, n_, k_, group), (cfg, ms) in results.items():
            print(f"tuned {label} M<={bucket} N={n_} K={k_} g={group}: {cfg} {ms * 1e3:.1f} us", flush=True)
        if save_to:
            kernels.save_tuned(save_to, torch.cuda.get_device_name())


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="3 shapes, M in {1, 16, 128}")
    parser.add_argument("--tune", action="store_true", help="tune the kernel configs for these shapes first")
    parser.add_argument("--save-tuned", default=None, help="write the tuned configs to this JSON file")
    parser.add_argument("--verbose", action="store_true", help="print every candidate's time while tuning")
    parser.add_argument("--out", default=None, help="write the markdown table here (default: benchmarks/results/)")
    parser.add_argument("--shapes", type=int, default=None,
                        help="only the first N shapes of the list (the issue's goal shapes come first)")
    parser.add_argument("--m", type=int, nargs="+", default=None, help="only these M values")
    args = parser.parse_args(argv)
    if not torch.cuda.is_available():
        print("error: bench_kernels.py needs a CUDA GPU (the CPU path has benchmarks/bench_cpu_linear.py)")
        return 2
    shapes, m_values = (QUICK_SHAPES, QUICK_M) if args.quick else (SHAPES, M_VALUES)
    shapes, m_values = shapes[: args.shapes], args.m or m_values
    name = torch.cuda.get_device_name()
    copy_gbs = copy_bandwidth_gbs()
    header = [
        f"# int4 linear kernels on {name}",
        "",
        f"{datetime.date.today().isoformat()}, torch {torch.__version__}, group {GROUP}, bf16 activations, "
        f"{'tuned configs' if args.tune else 'configs from kernels/tuned or the heuristic'}.",
        f"Device-to-device copy bandwidth measured here: {copy_gbs:.0f} GB/s (read + write).",
        "Command: `python benchmarks/bench_kernels.py" + (" --tune" if args.tune else "") + (" --quick" if args.quick else "")
        + (f" --shapes {args.shapes}" if args.shapes else "") + (f" --m {' '.join(map(str, args.m))}" if args.m else "") + "`",
        "",
    ]
    print("\n".join(header), flush=True)
    out = args.out or os.path.join(
        os.path.dirname(os.path.abspath(__file__)), "results",
        f"kernels_{name.replace(' ', '_').lower()}.md",
    )
    with open(out, "w") as f:  # written row by row: a run cut short keeps the rows it timed
        f.write("\n".join(header + TABLE_HEAD) + "\n")
        f.flush()
        print("\n".join(TABLE_HEAD), flush=True)
        for shape in shapes:  # tune a shape, then time it: a run cut short has whole shapes, goal shapes first
            if args.tune:
                tune_for([shape], m_values, save_to=args.save_tuned, verbose=args.verbose)
            run_table([shape], m_values, copy_gbs, sink=lambda row: (f.write(row + "\n"), f.flush()))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
