"""Compile the int4 kernels for a GPU target on a machine without one; report resources and the inner loop.

    python benchmarks/compile_report.py                       # sm_90, the default candidates of 4096 x 4096
    python benchmarks/compile_report.py --arch 90 --dtype fp16
    # another Triton (the device machine's 3.6): install its wheel aside and put it first
    pip install --no-deps --target /tmp/triton36 triton==3.6.0
    PYTHONPATH=/tmp/triton36 python benchmarks/compile_report.py --m 1 2 4
    python benchmarks/compile_report.py --m 16 --all-ops      # every opcode of each main loop
    python benchmarks/compile_report.py --m 16 --loop         # and each main loop's instructions, in order
    python benchmarks/compile_report.py --m 1 16 --hazards    # wgmma rows: writes to in-flight A registers (0)
    python benchmarks/compile_report.py --m 1 --loads         # each global load's distance to its first use
    python benchmarks/compile_report.py --m 1 --caps 64 80 96 # the staged GEMV rows under register caps too
    python benchmarks/compile_report.py --m 8 16 64 --overlap --hazards   # the experimental two-tile overlap
    AWQ_AO_GLUON_MASKED=1 python benchmarks/compile_report.py --m 1 16    # Gluon loads masked where EVEN drops them

Triton's wheel carries ptxas and cuobjdump, so kernels compile to SASS here.
For each launch config: registers, stack (spills), shared memory, and the
instructions of the main loop per weight per thread (the issue-rate cost of
dequantization: the lower, the closer the kernel can get to HBM bandwidth).
"""

from __future__ import annotations

import argparse
import collections
import dataclasses
import os
import re
import subprocess
import sys
import tempfile

import triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource

from awq_ao.kernels.configs import KernelConfig
from awq_ao.kernels.int4_dequant import _int4_dequant_kernel
from awq_ao.kernels.int4_gemm import _int4_gemm_kernel
from awq_ao.kernels.int4_gemv import _int4_gemv_kernel

BIN = os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin")
TYPES = {"bf16": "bf16", "fp16": "fp16", "fp32": "fp32"}


def _signature(kind: str, dt: str) -> dict:
    if kind == "dequant":
        sig = {"q_ptr": "*i32", "s_ptr": f"*{dt}", "z_ptr": "*u8", "pre_ptr": f"*{dt}", "w_ptr": f"*{dt}",
               "N": "i32", "K": "i32", "stride_q": "i32", "stride_s": "i32", "stride_w": "i32"}
        return sig
    sig = {"x_ptr": f"*{dt}", "q_ptr": "*i32", "s_ptr": f"*{dt}", "z_ptr": "*u8", "pre_ptr": f"*{dt}",
           "out_ptr": f"*{dt}", "y_ptr": f"*{dt}", "counter_ptr": "*i32", "M": "i32", "N": "i32", "K": "i32", "TILES": "i32", "TILES_PER_SPLIT": "i32"}
    if kind == "gemm":
        sig["magic_bits"] = "i32"
    sig.update({name: "i32" for name in ("stride_xm", "stride_q", "stride_s", "stride_om", "stride_osplit")})
    sig.update({"stride_qblock": "i32", "stride_qtile": "i32"})
    return sig


KERNELS = {"gemv": _int4_gemv_kernel, "gemm": _int4_gemm_kernel, "dequant": _int4_dequant_kernel}
PDL = 0  # the kernels' programmatic dependent launch level (kernels/pdl.py; ``--pdl``: 2, wait and release)


def compile_wgmma(cfg: KernelConfig, dt: str, group: int, arch: int, k: int = 4096, pre: bool = False,
                  overlap: bool = None, even: bool = None):
    """The compiled Gluon kernel of a ``wgmma`` config (``int4_wgmma.py``) for K = ``k``, output in the
    activation dtype (fp32 partials when the config splits K); ``overlap`` (default: the module's
    ``OVERLAP_PAIRS``) for the two-buffer loop's experimental MMA / unpacking overlap; ``even`` (default: as
    the launcher sets it when N is a multiple of the tile, i.e. when the split divides the K tiles, and
    ``AWQ_AO_GLUON_MASKED=1`` does not keep the masks) for the mask-free loads."""
    import torch
    from triton.experimental.gluon._runtime import GluonASTSource

    from awq_ao.kernels import int4_wgmma

    tiles = -(-k // int4_wgmma.BLOCK_K)
    per_split = -(-tiles // cfg.split_k)
    split_out = per_split < tiles
    sig = {"x_ptr": f"*{dt}", "q_ptr": "*i32", "s_ptr": f"*{dt}", "z_ptr": "*u8", "pre_ptr": f"*{dt}",
           "out_ptr": "*fp32" if split_out else f"*{dt}", "y_ptr": f"*{dt}", "counter_ptr": "*i32"}
    sig.update({name: "i32" for name in ("M", "N", "K", "K_WORDS", "stride_xm", "stride_q", "stride_s", "stride_om",
                                         "stride_osplit", "magic_pair")})
    constexprs = {"GROUP_SIZE": group, "HAS_PRE_SCALE": pre, "BLOCK_M": cfg.block_m, "TILES": per_split,
                  "SPLIT_OUT": split_out, "FUSED_SPLITS": cfg.split_k if cfg.fused_reduce and split_out else 0,
                  "TWO_BUFFERS": cfg.prefetch == 2, "RING": cfg.num_stages if cfg.num_stages >= 3 else 0,
                  "OVERLAP": ((int4_wgmma.OVERLAP_PAIRS if overlap is None else overlap) and cfg.prefetch == 2
                              and not cfg.mma_sync),
                  "MMA_SYNC": cfg.mma_sync, "LATE": cfg.late_dequant,
                  "EVEN": (int4_wgmma.even_loads(cfg.block_n, cfg.block_n, tiles * 16, per_split) if even is None
                           else even),
                  "MAGIC": int4_wgmma.MAGIC_VALUE[torch.bfloat16 if dt == "bf16" else torch.float16],
                  "NEG_MAGIC": int4_wgmma.NEG_MAGIC_PAIR[torch.bfloat16 if dt == "bf16" else torch.float16],
                  "BLOCK_N": cfg.block_n, "WORDS": int4_wgmma.words_layout(cfg.block_n),
                  "L2_TILES": min(cfg.l2_prefetch, per_split)}
    return _compile(GluonASTSource, int4_wgmma._int4_wgmma_kernel, sig, constexprs,
                    ("N", "K", "K_WORDS", "stride_xm", "stride_q", "stride_om", "stride_osplit"), arch,
                    {"num_warps": cfg.block_n // 16})


def _compile(source_type, kernel, sig: dict, constexprs: dict, divisible: tuple, arch: int, options: dict):
    """``triton.compile`` of ``kernel`` for sm_``arch``, specialised as a launch would be: the pointers and the
    ``divisible`` integer arguments marked divisible by 16."""
    if "PDL" in kernel.arg_names:  # (every argument named: Triton 3.9 fills no defaults here)
        level = constexprs.get("PDL", PDL)
        constexprs, options = {**constexprs, "PDL": level}, {**options, "launch_pdl": level > 0}
    sig = {**sig, **{name: "constexpr" for name in constexprs}}
    names = list(sig)
    attrs = {(names.index(n),): [["tt.divisibility", 16]] for n in names if n.endswith("_ptr") or n in divisible}
    src = source_type(kernel, sig, constexprs=constexprs, attrs=attrs)
    return triton.compile(src, target=GPUTarget("cuda", arch, 32), options=options)


def compile_staged(cfg: KernelConfig, dt: str, group: int, arch: int, k: int = 4096, pre: bool = False):
    """The compiled Gluon kernel of a ``staged`` config (``int4_gemv_staged.py``) for K = ``k``: fp32 partials
    when the config splits K, else the activation dtype."""
    from triton.experimental.gluon._runtime import GluonASTSource

    from awq_ao.kernels import int4_gemv_staged

    split_out = cfg.split_k > 1
    sig = {"x_ptr": f"*{dt}", "q_ptr": "*i32", "s_ptr": f"*{dt}", "z_ptr": "*u8", "pre_ptr": f"*{dt}",
           "out_ptr": "*fp32" if split_out else f"*{dt}", "M": "i32"}
    sig.update({name: "i32" for name in ("stride_xm", "stride_q", "stride_s", "stride_om", "stride_osplit")})
    constexprs = {"GROUP_SIZE": group, "HAS_PRE_SCALE": pre,
                  "TILES": k // int4_gemv_staged.BLOCK_K // cfg.split_k, "PREFETCH": cfg.prefetch >= 1,
                  "SPLIT_OUT": split_out, "ROWS": cfg.block_m, "BLOCK_N": cfg.block_n, "WARPS": cfg.num_warps,
                  "L2_TILES": min(cfg.l2_prefetch, k // int4_gemv_staged.BLOCK_K // cfg.split_k)}
    return _compile(GluonASTSource, int4_gemv_staged._int4_gemv_staged_kernel, sig, constexprs,
                    ("stride_xm", "stride_q", "stride_om", "stride_osplit"), arch,
                    {"num_warps": cfg.num_warps, **({"maxnreg": cfg.max_registers} if cfg.max_registers else {})})


def compile_reduce(split: int, dt: str, arch: int):
    """The compiled split-K reduce launch (``splitk._splitk_reduce_kernel``) for ``split`` partials into ``dt``."""
    from awq_ao.kernels import splitk

    sig = {"part_ptr": "*fp32", "y_ptr": f"*{dt}", "MN": "i32", "stride_split": "i32"}
    return _compile(ASTSource, splitk._splitk_reduce_kernel, sig,
                    {"SPLIT_K": split, "BLOCK": splitk.REDUCE_BLOCK, "PDL": min(PDL, 1)},  # as launched: no release
                    ("MN", "stride_split"), arch, {"num_warps": 4})


def compile_config(cfg: KernelConfig, dt: str, group: int, arch: int):
    """The compiled kernel of ``cfg`` (split-K output in the activation dtype), as Triton specialises it."""
    kind = cfg.kind
    if kind == "wgmma":
        return compile_wgmma(cfg, dt, group, arch)
    if kind == "staged":
        return compile_staged(cfg, dt, group, arch)
    sig = _signature(kind, dt)
    constexprs = {"GROUP_SIZE": group, "HAS_PRE_SCALE": False, "BLOCK_N": cfg.block_n, "BLOCK_K": cfg.block_k}
    if kind != "dequant":
        constexprs["EVEN_K"] = True
        constexprs["FUSED_SPLITS"] = cfg.split_k if cfg.fused_reduce else 0
    if kind == "gemv":
        constexprs.update({"PREFETCH": cfg.prefetch, "EVEN_M": True, "ROWS": cfg.block_m, "TILED": False,
                           "LOOP_STAGES": cfg.num_stages if cfg.num_stages >= 3 else None,
                           "L2_TILES": cfg.l2_prefetch})
    if kind == "gemm":
        constexprs.update({"L2_TILES": cfg.l2_prefetch, "DOT_PRECISION": "ieee" if dt == "fp32" else "tf32",
                           "BLOCK_M": cfg.block_m,
                           "SWAP_AB": cfg.swap_ab, "PREFETCH": cfg.prefetch, "PACKED16": dt != "fp32", "USE_ASM": True, "TILED": False,
                           "NATURAL": cfg.natural_order and dt != "fp32"})
    return _compile(ASTSource, KERNELS[kind], sig, constexprs,
                    ("N", "K", "stride_xm", "stride_q", "stride_om", "stride_w", "magic_bits", "stride_qblock",
                     "stride_qtile"), arch, {"num_warps": cfg.num_warps, "num_stages": cfg.num_stages})


def main_loop(sass: str) -> list[str]:
    """The instructions of the longest backward-branch loop (all of them, if there is none)."""
    lines = [ln for ln in sass.splitlines() if re.match(r"\s+/\*[0-9a-f]{4,}\*/", ln)]

    def addr(ln):
        return int(re.match(r"\s+/\*([0-9a-f]+)\*/", ln).group(1), 16)

    best = []  # no loop (the dequantize kernel): count the whole kernel
    for ln in lines:
        hit = re.search(r"BRA (?:`\(\.L_x_\d+\) )?0x([0-9a-f]+)", ln)
        if hit and int(hit.group(1), 16) < addr(ln):
            body = [x for x in lines if int(hit.group(1), 16) <= addr(x) <= addr(ln)]
            best = max(best, body, key=len)
    return [ln.split("*/")[1].strip() for ln in best or lines]


def _unpredicated(ins: str) -> str:
    """A SASS instruction without its guard predicate (``@P3 ``, ``@!UPT ``)."""
    return re.sub(r"^@!?U?P[T\d] ", "", ins)


def _opcode(ins: str) -> str:
    return _unpredicated(ins).split()[0]


def loop_mix(body: list[str]) -> tuple[int, collections.Counter]:
    """Instruction count and opcode mix of a loop body."""
    return len(body), collections.Counter(_opcode(ins).split(".")[0] for ins in body)


def load_use_gaps(body: list[str]) -> list[tuple[str, str, int]]:
    """(opcode, destination register, instructions until the first one reading it) for each global load (LDG)
    of a loop body, counting around the loop's back edge."""
    gaps = []
    for i, ins in enumerate(body):
        if not _opcode(ins).startswith("LDG."):
            continue
        dest = _unpredicated(ins).split()[1].rstrip(",")
        reads = re.compile(rf"\b{dest}\b")
        for gap in range(1, len(body) + 1):
            operands = _unpredicated(body[(i + gap) % len(body)]).split(None, 1)[1:]
            sources = operands[0].split(",", 1)[1:] if operands else []
            if sources and reads.search(sources[0]):
                gaps.append((_opcode(ins), dest, gap))
                break
    return gaps


def shortest_load_use(body: list[str]) -> int:
    """Fewest instructions between a global load (LDG) in the loop and the first instruction reading its
    register, counting around the loop's back edge; -1 when the loop has no LDG.

    A short gap means the loop waits for memory within the iteration that issued the load; a load
    prefetched for the next tile shows a gap near the loop's length.
    """
    return min((gap for _, _, gap in load_use_gaps(body)), default=-1)


def _dest_registers(ins: str) -> set[int]:
    """The general registers an instruction writes (its first operand: 1, 2 or 4 of them by width); none
    for stores, branches, barriers and HGMMA (whose destination is the accumulator)."""
    op = _opcode(ins)
    parts = _unpredicated(ins).split(None, 1)
    if len(parts) < 2 or re.match(r"(ST|RED|BRA|BAR|HGMMA|WARPGROUP|EXIT|RET|CALL)", op):
        return set()
    hit = re.match(r"R(\d+)\b", parts[1])
    if not hit:
        return set()
    width = 4 if ".128" in op else 2 if (".64" in op or op.startswith(("CS2R", "IMAD.WIDE", "HMMA"))) else 1
    return set(range(int(hit.group(1)), int(hit.group(1)) + width))


def wgmma_register_hazards(body: list[str]) -> list[str]:
    """Instructions of a loop body that touch an HGMMA's registers while it may still use them: a write to
    its A operand, or any read or write of its accumulator, after it is issued and before a
    ``WARPGROUP.DEPBAR.LE gsb0, 0x0`` (a wait that leaves groups in flight retires nothing certain), around
    the back edge too. The MMA reads register operands and writes its accumulator asynchronously (PTX ISA,
    wgmma.mma_async), so any such instruction is a wrong product waiting to happen."""
    a_regs: set[int] = set()
    acc_regs: set[int] = set()
    hazards = []
    for ins in body + body:  # twice: a group left in flight at the back edge meets the next iteration's writes
        op = _opcode(ins)
        operands = _unpredicated(ins).split(None, 1)[1:]
        if op.startswith("HGMMA"):
            regs = operands[0].split(",")
            shape = re.match(r"HGMMA\.64x(\d+)x", op)
            acc = int(re.match(r"\s*R(\d+)", regs[0]).group(1))
            acc_regs |= set(range(acc, acc + (int(shape.group(1)) // 2 if shape else 1)))  # fp32: N / 2 per thread
            hit = re.match(r"\s*R(\d+)", regs[1])
            if hit:  # A from registers: 4 of them for a k16 fragment of 16-bit values
                a_regs |= set(range(int(hit.group(1)), int(hit.group(1)) + 4))
        elif op.startswith("WARPGROUP.DEPBAR") and re.search(r"gsb0, 0x0\b", ins):
            a_regs.clear()
            acc_regs.clear()
        elif ins not in hazards:
            touched = {int(r) for r in re.findall(r"\bR(\d+)\b", operands[0])} if operands else set()
            if _dest_registers(ins) & a_regs or touched & acc_regs:
                hazards.append(ins)
    return hazards


def cuobjdump(kernel) -> tuple[str, str]:
    """(resource usage, SASS) of a compiled kernel, by the cuobjdump in Triton's wheel."""
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "k.cubin")
        with open(path, "wb") as f:
            f.write(kernel.asm["cubin"])
        return tuple(subprocess.run([os.path.join(BIN, "cuobjdump"), flag, path], capture_output=True,
                                    text=True).stdout for flag in ("--dump-resource-usage", "--dump-sass"))


def report(cfg: KernelConfig, dt: str, group: int, arch: int, top: int = 6, loop: bool = False,
           hazards: bool = False, loads: bool = False) -> str:
    """One table row for ``cfg``: resources, main-loop instructions per weight, the ``top`` commonest opcodes
    (all with None); with ``loop``, the loop's instructions follow the row, one per line; with ``hazards``, a
    wgmma row is followed by the count of ``wgmma_register_hazards`` in its loop; with ``loads``, each global
    load's distance to its first use (``load_use_gaps``), one line per load."""
    kernel = compile_config(cfg, dt, group, arch)
    usage, sass = cuobjdump(kernel)
    regs = re.search(r"REG:(\d+)", usage).group(1)
    stack = re.search(r"STACK:(\d+)", usage).group(1)
    body = main_loop(sass)
    count, ops = loop_mix(body)
    weights_per_thread = cfg.block_n * cfg.block_k / (32 * cfg.num_warps)
    if cfg.kind == "wgmma" and cfg.prefetch == 2:  # two weight buffers: the loop body unpacks two tiles
        weights_per_thread *= 2
    top = ", ".join(f"{op} {n}" for op, n in ops.most_common(top))
    if cfg.kind == "wgmma":
        kind = ("mma.sync" + (" late" if cfg.late_dequant else "") if cfg.mma_sync else "wgmma") + (
            " ring" if cfg.num_stages >= 3 else " 2 buffers" if cfg.prefetch == 2 else "")
    else:
        kind = cfg.kind + ("" if not cfg.prefetch else " prefetch" if cfg.prefetch == 1 else f" prefetch{cfg.prefetch}")
    kind += " swap" if cfg.swap_ab else ""
    kind += (" ring" if cfg.kind == "gemv" and cfg.num_stages >= 3 else "") + (" fused" if cfg.fused_reduce else "")
    kind += " natural" if cfg.natural_order else ""
    kind += f" cap {cfg.max_registers}" if cfg.max_registers else ""
    kind += f" l2 {cfg.l2_prefetch}" if cfg.l2_prefetch else ""
    return (f"| {kind} | {cfg.block_m} | {cfg.block_n} | {cfg.block_k} | {cfg.num_warps} | {cfg.num_stages} | "
            f"{regs} | {stack} | {kernel.metadata.shared} | {count / weights_per_thread:.2f} | "
            f"{shortest_load_use(body)} | {top} |" + ("".join(f"\n    {ins}" for ins in body) if loop else "")
            + (f"\n    A-register hazards: {len(wgmma_register_hazards(body))}" if hazards and cfg.kind == "wgmma"
               else "")
            + "".join(f"\n    {op} {dest}: first read {gap} instructions later" for op, dest, gap in
                      (load_use_gaps(body) if loads else [])))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--arch", type=int, default=90)
    parser.add_argument("--dtype", default="bf16", choices=sorted(TYPES))
    parser.add_argument("--group", type=int, default=128)
    parser.add_argument("--m", type=int, nargs="+", default=[1, 16, 64, 512], help="M values whose candidates to compile")
    parser.add_argument("--all-ops", action="store_true", help="the loop's whole opcode mix, not its 6 commonest")
    parser.add_argument("--loop", action="store_true", help="each main loop's instructions after its row")
    parser.add_argument("--hazards", action="store_true",
                        help="after each wgmma row, its loop's writes to in-flight A registers (0 is correct)")
    parser.add_argument("--loads", action="store_true",
                        help="after each row, every global load's distance (instructions) to its first use")
    parser.add_argument("--overlap", action="store_true",
                        help="wgmma rows with the experimental two-tile overlap (int4_wgmma.OVERLAP_PAIRS)")
    parser.add_argument("--caps", type=int, nargs="*", default=[],
                        help="also compile each staged GEMV row at these register caps (KernelConfig.max_registers)")
    parser.add_argument("--pdl", action="store_true", help="the kernels as launched with programmatic dependent "
                        "launch (kernels/pdl.py: their griddepcontrol instructions first)")
    args = parser.parse_args(argv)
    global PDL
    PDL = 2 if args.pdl else 0
    import torch

    from awq_ao.kernels import int4_wgmma

    int4_wgmma.OVERLAP_PAIRS = int4_wgmma.OVERLAP_PAIRS or args.overlap  # compile_wgmma's default

    from awq_ao.kernels.configs import (GLUON_L2_TILES, GLUON_TILES, GLUON_WIDE_TILES, L2_PREFETCH_TILES,
                                        STAGED_L2_TILES, STAGED_ROWS2_TILES, STAGED_TILES, candidate_configs)

    seen = []
    for m in args.m:
        for cfg in candidate_configs(m, 4096, 4096, args.group, torch.device("cpu")):
            cfg = dataclasses.replace(cfg, split_k=8 if cfg.fused_reduce else 1)  # fused: its epilogue for 8 splits
            if cfg not in seen:
                seen.append(cfg)
        # the staged GEMV (a candidate on sm_90 GPUs only), split 4: 4 tiles per program at K = 4096
        staged = ([(b, w, p, 1, cap) for b, w, p, cap in STAGED_TILES] if m == 1 else
                  [(b, w, 0, 2, 0) for b, w in STAGED_ROWS2_TILES] if m == 2 else [])
        seen += [KernelConfig("staged", block_n, 256, split_k=4, block_m=rows, num_warps=warps, prefetch=prefetch,
                              max_registers=cap).fitted(args.group, 4096)
                 for block_n, warps, prefetch, rows, cap in staged]
        if m == 1:  # and the staged tiles the tuner tries with the L2 prefetch
            seen += [KernelConfig("staged", block_n, 256, split_k=4, num_warps=warps, max_registers=cap,
                                  l2_prefetch=tiles).fitted(args.group, 4096)
                     for block_n, warps, cap in STAGED_L2_TILES for tiles in L2_PREFETCH_TILES["staged"]]
        if m <= 64 and args.dtype != "fp32":  # the Gluon kernel, wgmma and mma.sync (candidates on sm_90 GPUs only)
            tiles = [(b, w, s, mma, late) for b, w, s, mma, late in GLUON_TILES] + (
                [(b, 1, 1, mma, False) for b, mma in GLUON_WIDE_TILES] if m >= 8 else [])
            for block_n, buffers, stages, mma_sync, late in tiles:
                cfg = KernelConfig("wgmma", block_n, 128, block_m=m, prefetch=buffers, num_stages=stages,
                                   mma_sync=mma_sync, late_dequant=late).fitted(args.group, 4096)
                if cfg not in seen:
                    seen.append(cfg)
            seen += [KernelConfig("wgmma", block_n, 128, block_m=m, prefetch=buffers, mma_sync=mma_sync,  # and with
                                  l2_prefetch=t).fitted(args.group, 4096)  # the L2 prefetch, as the tuner tries them
                     for block_n, buffers, mma_sync in GLUON_L2_TILES for t in L2_PREFETCH_TILES["wgmma"]]
    for cfg in [c for c in seen if c.kind == "staged"]:  # --caps: the staged rows again under each register cap
        capped = [dataclasses.replace(cfg, max_registers=cap) for cap in args.caps]
        seen[seen.index(cfg) + 1:seen.index(cfg) + 1] = [c for c in capped if c not in seen]
    print(f"sm_{args.arch}, {args.dtype}, group {args.group}, triton {triton.__version__}")
    print("| kind | BM | BN | BK | warps | stages | regs | stack | smem | loop instr / weight / thread "
          "| shortest LDG -> use (instr) | top ops |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for cfg in seen:
        try:
            print(report(cfg, TYPES[args.dtype], args.group, args.arch, top=None if args.all_ops else 6,
                         loop=args.loop, hazards=args.hazards, loads=args.loads), flush=True)
        except Exception as exc:
            print(f"| {cfg} | compile error: {type(exc).__name__}: {str(exc).splitlines()[0][:80]} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
