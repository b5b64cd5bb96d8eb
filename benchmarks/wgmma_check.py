"""The Gluon kernel (``awq_ao/kernels/int4_wgmma.py``, wgmma and mma.sync) on a GPU: correctness, then a timing table.

    python benchmarks/wgmma_check.py --out DIR      # on an sm_90 GPU (H100 / H200); about two minutes
    TRITON_INTERPRET=1 python benchmarks/wgmma_check.py --dry-run   # no GPU: the script's own check

Run in a process of its own before ``gpu_check.py`` (``device_check.sh`` does): a kernel that faults takes
its CUDA context down with it, and a failure here turns the kernel off for the rest of the session
(``AWQ_AO_DISABLE_WGMMA=1``). Correctness: bf16 and fp16, fresh random data, output poisoned with NaN,
error relative to a float64 reference, over tails in M, N and K, groups 32 / 64 / 128, with and without
``act_pre_scale``, at several splits, with the reduce launch and with the in-kernel sum, one and two weight
buffers and the shared-memory ring, with wgmma and (``KernelConfig.mma_sync``) with mma.sync. Timing (CUDA-graph replays over rotated weight copies,
``kernels/timing.py``): on the three goal shapes at M = 1 and 16, the kernel at each split against what
``select_config`` runs today and bf16 ``F.linear``; written to DIR/wgmma_<gpu>.md as it goes.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import os
import sys

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from awq_ao.kernels import KernelConfig, configs, int4_linear, int4_wgmma, select_config  # noqa: E402
from gpu_check import make_case  # noqa: E402  (the same cases and float64 reference as every other path)

TOL = {torch.bfloat16: 1e-2, torch.float16: 3e-3}
CASES = ((1, 4096, 4096, 128), (5, 1000, 4100, 64), (16, 14336, 4096, 128), (33, 576, 576, 32),
         (64, 4096, 1000, 128), (3, 8192, 8192, 128))
GOAL_SHAPES = ((8192, 8192), (14336, 4096), (4096, 14336))  # (N, K)
# (rows per program, split, fused sum, weight buffers, ring stages): the configs each correctness case runs, and
# those each timing row times (ring stages 1: the words in registers)
CHECKED = ((64, 1, False, 1, 1), (64, 4, False, 2, 1), (64, 16, False, 1, 1), (64, 4, True, 1, 1),
           (64, 8, True, 2, 1), (64, 4, True, 1, 4), (64, 2, False, 1, 3), (128, 4, True, 1, 1), (128, 8, False, 1, 4))
TIMED = tuple((block_n, split, True, buffers, stages) for split in (2, 4, 8, 16)
              for block_n, buffers, stages in ((64, 1, 1), (64, 2, 1), (64, 1, 4), (128, 1, 1), (128, 1, 4))) + (
                  (64, 4, False, 1, 1),)
# a short timing run (--short): the likeliest winners of each word feed (dropped: split 2 and the 128-row tile,
# never the fastest in runs 9 and 10)
TIMED_SHORT = ((64, 4, True, 1, 1), (64, 4, True, 2, 1), (64, 8, True, 2, 1), (64, 4, True, 1, 4), (64, 8, True, 1, 1))
# the kernel's variants: "wgmma"; "overlap" (two buffers, OVERLAP_PAIRS); "mma" (mma.sync); "late" (mma.sync with
# late_dequant, groups of a multiple of 128 only). mma.sync shares everything but the MMA with wgmma, and late
# everything but the unpacking and the per-tile scaling with mma: their checks cover one buffer with the
# in-kernel sum, two buffers and the ring at every case's BLOCK_M, both ways of the pre-scale; the plain wgmma
# specs (216 of 216 correct on the H200 in run 9, both ways, wgmma_check_nvidia_h200.log) and the overlap run
# with the pre-scale only, which changes only how the activation is staged: 252 checks, near run 9's 216
MMA_CHECKED = ((64, 4, False, 2, 1), (64, 4, True, 1, 1), (64, 2, False, 1, 3))
VARIANTS = ("wgmma", "overlap", "mma", "late", "late masked")
FAILED_FILE = "gluon_failed_variants.txt"  # written by the check: the variants with a failure, space-separated
# timing: the overlap on the config fastest at M = 16 on two of three goal shapes in run 10
# (wgmma_nvidia_h200_m16.md), plain mma.sync on three, late on every 64-row config timed
OVERLAP_TIMED = ((64, 8, True, 2, 1),)
MMA_TIMED = ((64, 4, True, 1, 1), (64, 8, True, 2, 1), (64, 4, True, 1, 4))
# late with its loads masked although the goal shapes need no masks (int4_wgmma.FORCE_MASKED): is EVEN faster?
MASKED_TIMED = ((64, 8, True, 2, 1),)


def label(cfg, variant: str = "wgmma") -> str:
    """A fitted config in short: N64 BM16 s4f b2 = 64 rows, BLOCK_M 16, split 4, fused sum, two weight buffers (wgmma);
    r4: a 4-stage shared-memory ring for the words; b2o: two buffers with the experimental MMA / unpacking
    overlap (``int4_wgmma.OVERLAP_PAIRS``); a trailing " mma": mma.sync, " late": mma.sync with late_dequant,
    " masked": loads with masks where the shape needs none (``int4_wgmma.FORCE_MASKED``)."""
    words = f"r{cfg.num_stages}" if cfg.num_stages >= 3 else f"b{cfg.prefetch}" + ("o" if variant == "overlap" else "")
    mma = " late" if cfg.late_dequant else " mma" if cfg.mma_sync else ""
    masked = " masked" if variant.endswith("masked") else ""
    return f"N{cfg.block_n} BM{cfg.block_m} s{cfg.split_k}{'f' if cfg.fused_reduce else ''} {words}{mma}{masked}"


def config(spec, variant: str, m: int) -> KernelConfig:
    """The (unfitted) config of a (block_n, split, fused, buffers, stages) spec in ``variant`` for M rows."""
    block_n, split, fused, buffers, stages = spec
    return KernelConfig("wgmma", block_n, 128, block_m=m, split_k=split, fused_reduce=fused, prefetch=buffers,
                        num_stages=stages, mma_sync=variant in ("mma", "late", "late masked"),
                        late_dequant=variant.startswith("late"))


def checked_variants(with_pre: bool, group: int = 128) -> list:
    """(spec, variant) pairs each correctness case runs, with or without the pre-scale, for its group size."""
    out = [(spec, "wgmma") for spec in CHECKED if with_pre]
    out += [(spec, "overlap") for spec in CHECKED if with_pre and spec[3] == 2]
    out += [(spec, "mma") for spec in MMA_CHECKED]
    out += [(spec, "late") for spec in MMA_CHECKED if group % 128 == 0]
    return out


def timed_variants(timed) -> list:
    """(spec, variant) pairs each timing row times, but none of a variant the check turned off
    (``configs.gluon_variants_off``)."""
    out = [(spec, "wgmma") for spec in timed]
    out += [(spec, "overlap") for spec in timed if spec in OVERLAP_TIMED]
    out += [(spec, "mma") for spec in timed if spec in MMA_TIMED]
    out += [(spec, "late") for spec in timed if spec[0] == 64]
    out += [(spec, "late masked") for spec in timed if spec in MASKED_TIMED]
    off = configs.gluon_variants_off()
    return [(spec, variant) for spec, variant in out if variant.split()[0] not in off]


@contextlib.contextmanager
def variant_flags(variant: str):
    """The module switches ``variant`` needs, inside the block: ``int4_wgmma.OVERLAP_PAIRS`` ("overlap") and
    ``FORCE_MASKED`` ("late masked"); kernel constexprs, so each value compiles apart."""
    saved = int4_wgmma.OVERLAP_PAIRS, int4_wgmma.FORCE_MASKED
    int4_wgmma.OVERLAP_PAIRS, int4_wgmma.FORCE_MASKED = variant == "overlap", variant.endswith("masked")
    try:
        yield
    finally:
        int4_wgmma.OVERLAP_PAIRS, int4_wgmma.FORCE_MASKED = saved


def correctness(device, cases=CASES, dtypes=(torch.bfloat16, torch.float16)) -> dict:
    """Every case and variant against the float64 reference; returns the failures by variant."""
    failures = dict.fromkeys(VARIANTS, 0)
    for dtype in dtypes:
        for m, n, k, group in cases:
            for with_pre in (False, True):
                x, (qdata, s, z), pre, ref = make_case(device, dtype, m, n, k, group, with_pre=with_pre)
                for spec, variant in checked_variants(with_pre, group):
                    cfg = config(spec, variant, m)
                    out = torch.full((m, n), float("nan"), dtype=dtype, device=device)
                    with variant_flags(variant):
                        int4_linear(x, qdata, s, z, group, k, act_pre_scale=pre, out=out, config=cfg)
                    err = ((out.double() - ref).norm() / ref.norm()).item()
                    ok = bool(torch.isfinite(out).all()) and err < TOL[dtype]
                    failures[variant] += not ok
                    fitted = cfg.fitted(group, qdata.shape[1] * 2)
                    print(f"{'ok  ' if ok else 'FAIL'} {str(dtype)[6:]} M={m} N={n} K={k} g={group} pre={with_pre} "
                          f"{label(fitted, variant)}: rel err {err:.2e}", flush=True)
    return failures


def timing(device, out_path, m_values=(1, 16), timed=TIMED) -> None:
    from awq_ao.kernels.int4_matmul import launch_int4_linear
    from awq_ao.kernels.splitk import tile_counters
    from awq_ao.kernels.timing import copies_for, graph_time_ms, l2_bytes

    dtype, group = torch.bfloat16, 128
    counters = tile_counters(device)
    header = ("| N | K | M | bf16 F.linear us | select_config us (config) | Gluon best us (config) | "
              "Gluon / bf16 speedup | Gluon / select_config speedup | every config us (s: split, f: fused sum, "
              "N: weight rows per program, b: weight buffers, o: overlapped, r: ring stages, mma: mma.sync) |")
    lines = [f"{torch.cuda.get_device_name()}, torch {torch.__version__}", "", header, "|---" * 9 + "|"]
    with open(out_path, "w") as f:
        f.write("\n".join(lines) + "\n")
    print("\n".join(lines), flush=True)
    for n, k in GOAL_SHAPES:
        for m in m_values:
            reps = copies_for(n * k // 2, l2_bytes(), most=64)
            sets = [(torch.randn(m, k, dtype=dtype, device=device),
                     torch.randint(0, 256, (n, k // 2), dtype=torch.uint8, device=device),
                     (torch.rand(n, k // group, device=device) * 0.01 + 1e-3).to(dtype),
                     torch.randint(0, 16, (n, k // group), dtype=torch.uint8, device=device),
                     torch.empty(m, n, dtype=dtype, device=device)) for _ in range(reps)]
            dense = [torch.randn(n, k, dtype=dtype, device=device) for _ in range(max(2, reps // 4))]
            bf16_us = 1e3 * graph_time_ms([lambda w=w, s=sets[0]: F.linear(s[0], w) for w in dense])
            del dense

            def run(cfg, variant="wgmma"):
                with variant_flags(variant):
                    return 1e3 * graph_time_ms([lambda s=s: launch_int4_linear(
                        s[0], s[1], s[2], s[3], None, s[4], group, k, config=cfg, counters=counters) for s in sets])

            base_cfg = select_config(m, n, k, group, device)
            base_us = run(base_cfg)
            per_split = {}  # label (split, fused sum, buffers) -> us
            for spec, variant in timed_variants(timed):
                cfg = config(spec, variant, m).fitted(group, k)
                if label(cfg, variant) not in per_split:
                    per_split[label(cfg, variant)] = run(cfg, variant)
            best_split = min(per_split, key=per_split.get)
            best = per_split[best_split]
            short = {f.name: getattr(base_cfg, f.name) for f in dataclasses.fields(base_cfg)
                     if getattr(base_cfg, f.name) != f.default}
            row = (f"| {n} | {k} | {m} | {bf16_us:.1f} | {base_us:.1f} ({short}) | {best:.1f} ({best_split}) | "
                   f"{bf16_us / best:.2f}x | {base_us / best:.2f}x | "
                   + ", ".join(f"{name} {us:.1f}" for name, us in per_split.items()) + " |")
            print(row, flush=True)
            with open(out_path, "a") as f:
                f.write(row + "\n")
            sets = None  # free the copies before the next shape


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default=None, help="folder for wgmma_<gpu>.md (default: here) and, from the check, "
                        f"{FAILED_FILE} (only with --out)")
    parser.add_argument("--no-bench", action="store_true", help="correctness only")
    parser.add_argument("--dry-run", action="store_true",
                        help="no GPU: small cases on CPU under TRITON_INTERPRET=1, where wgmma configs take the "
                             "swapped tl.dot GEMM (checks the script, not the kernel)")
    parser.add_argument("--no-check", action="store_true", help="timing only (after a run whose check passed)")
    parser.add_argument("--m", type=int, nargs="+", default=[1, 16], help="the timing table's M values")
    parser.add_argument("--short", action="store_true", help="time TIMED_SHORT's configs, not TIMED's")
    args = parser.parse_args(argv)
    if args.dry_run:
        failures = correctness(torch.device("cpu"), cases=((1, 64, 256, 128), (5, 72, 160, 32)),
                               dtypes=(torch.float16,))  # the interpreter has no bf16
        if args.out:
            write_failed(args.out, failures)
        print(f"dry run: {sum(failures.values())} failed")
        return 1 if any(failures.values()) else 0
    device = torch.device("cuda")
    if not torch.cuda.is_available() or not int4_wgmma.wgmma_available(device):
        print("error: needs an sm_90 GPU and a Triton with Gluon")
        return 2
    import triton

    print(f"device: {torch.cuda.get_device_name()}, torch {torch.__version__}, triton {triton.__version__}")
    torch.manual_seed(0)
    failures = dict.fromkeys(VARIANTS, 0) if args.no_check else correctness(device)
    if not args.no_check and args.out:
        write_failed(args.out, failures)
    print(f"wgmma correctness: {'not checked' if args.no_check else f'{sum(failures.values())} failed {failures}'}",
          flush=True)
    if not any(failures.values()) and not args.no_bench:
        out = args.out or "."
        os.makedirs(out, exist_ok=True)
        name = torch.cuda.get_device_name().replace(" ", "_").lower()
        timing(device, os.path.join(out, f"wgmma_{name}.md"), args.m, TIMED_SHORT if args.short else TIMED)
    return 1 if any(failures.values()) else 0


def write_failed(out: str, failures: dict) -> None:
    """``out``/FAILED_FILE: the variants with a failure, for device_check.sh to keep out of the later steps."""
    os.makedirs(out, exist_ok=True)
    with open(os.path.join(out, FAILED_FILE), "w") as f:
        f.write(" ".join(v for v, n in failures.items() if n) + "\n")


if __name__ == "__main__":
    sys.exit(main())
