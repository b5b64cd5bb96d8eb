"""The prepared GPU check: correctness of every CUDA path, then tuning and the timing table.

    python benchmarks/gpu_check.py --out DIR          # on a CUDA machine (writes log, tuned JSON, table)
    python benchmarks/gpu_check.py --out DIR --shapes 4 --m 1 16   # a short run: fewer shapes and M values
    TRITON_INTERPRET=1 python benchmarks/gpu_check.py --device cpu --quick   # dry run, no GPU

Correctness (fresh random data per case, output poisoned with NaN first, error
relative to a float64 reference ``(x * pre) @ dequantize(W).T``):

0. on sm_90 and later, launches with programmatic dependent launch (``kernels/pdl.py``) bit-identical to
   launches without, eager and replayed in a CUDA graph, for each way a call launches two kernels or more
   (a failure turns PDL off for the rest of the run);
1. every candidate launch config the tuner may pick (GEMV with 1, 2 or 4 rows,
   GEMM, the Gluon wgmma kernel on sm_90, split-K, dequantize + mm) on 4096 x
   4096 at M = 1, 2, 4, 16, 64, 128, 512, bf16 (with and without a pre-scale
   where the config handles it in a way of its own);
2. the default dispatch over M = 1 .. 300, bf16 and fp16, with tails in N and K,
   groups 32 / 64 / 128, 2- and 3-bit codes, with and without act_pre_scale;
3. split-K determinism (two runs, identical bits), and the in-kernel split-K
   sum (``fused_reduce``) bit-identical to the reduce launch over 200 calls;
4. an nn.Module eager, ``torch.compile(fullgraph=True)`` and
   ``mode="reduce-overhead"`` (CUDA graphs), each compiled once and called at
   M = 1, 3, 16, 200, 16, 1 (so dynamic shapes are exercised too; the graph
   traced for every M must call the opaque op, which picks each call's kernels); compiled
   and under CUDA graphs once more with ``fused_reduce`` configs forced for
   M = 1, 3 and 16 (at 16 in column order, ``natural_order``: one launch), checking that no CUDA graph is skipped and that Inductor
   updates the kept tile counters in place (any failure there also keeps the
   fused sum out of the tuning); on sm_90, once more with the Gluon wgmma
   kernel forced for those M (``awq_ao::int4_linear_opaque``, eager, compiled,
   CUDA graphs);

then (unless --no-bench) it times the 8192 x 8192 picks at M = 1 and 16 without and with PDL and without and
with the L2 prefetch, side by side (``pdl_effect``, ``l2_effect``), tunes the configs for the benchmark shapes,
saves them as JSON and prints ``bench_kernels.py``'s table. Exits non-zero when any correctness case fails.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import os
import sys
import time

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import awq_ao  # noqa: E402,F401
from awq_ao import AWQInt4Tensor, quant  # noqa: E402
from awq_ao.kernels import KernelConfig, configs, int4_linear, int4_wgmma, pdl  # noqa: E402
from awq_ao.kernels.splitk import tile_counters  # noqa: E402

TOL = {torch.float32: 2e-3, torch.float16: 3e-3, torch.bfloat16: 1.5e-2}
# The module checks' forced picks, {(M bucket, config)} for their 768 x 1024 g64 Linear (compile_replay.py
# replays the same): split-K with the in-kernel sum (at 16 in column order: one launch), or the Gluon kernels (the
# staged GEMV at M = 1, the wgmma kernel at 4 and 16); without either, the split GEMV with its reduce launch at
# M = 1 (the other buckets take the defaults). Every M = 1 pick and the fused M = 16 GEMM ask L2 for their first
# weight tiles (l2_prefetch), so the compiled checks run the prefetch as Inductor re-emits it
FORCED_PLAIN = {
    (1, KernelConfig("gemv", 64, 256, split_k=4, num_warps=2, l2_prefetch=2)),
}
FORCED_FUSED = {
    (1, KernelConfig("gemv", 64, 256, split_k=4, num_warps=2, fused_reduce=True, l2_prefetch=2)),
    (4, KernelConfig("gemm", 64, 64, split_k=4, block_m=16, num_stages=3, prefetch=1, swap_ab=True,
                     fused_reduce=True)),
    (16, KernelConfig("gemm", 64, 64, split_k=8, block_m=16, num_stages=3, prefetch=1, swap_ab=True,
                      fused_reduce=True, natural_order=True, l2_prefetch=32)),
}
FORCED_WGMMA = {
    (1, KernelConfig("staged", 64, 256, split_k=2, num_warps=2, l2_prefetch=32)),
    (4, KernelConfig("wgmma", 64, 128, block_m=8, split_k=1)),
    (16, KernelConfig("wgmma", 64, 128, block_m=16, split_k=2)),
}


def rel_err(y: torch.Tensor, ref: torch.Tensor) -> float:
    y, ref = y.double().cpu(), ref.double().cpu()
    return ((y - ref).norm() / ref.norm().clamp(min=1e-30)).item()


def make_case(device, dtype, m, n, k, group, bits=4, with_pre=False):
    w = torch.randn(n, k, device=device) * 0.05
    q, s, z = quant.quantize(w, bits, group, scale_dtype=dtype)
    pre = (torch.rand(k, device=device) + 0.5).to(dtype) if with_pre else None
    x = torch.randn(m, k, dtype=dtype, device=device)
    ref = (x.double() if pre is None else x.double() * pre.double()) @ quant.dequantize(
        q, s, z, group, k, torch.float64).t()
    return x, (quant.pack_int4(q), s, z), pre, ref


def check_kernel(device, dtype, m, n, k, group, bits=4, with_pre=False, config=None) -> tuple[float, bool]:
    x, (qdata, s, z), pre, ref = make_case(device, dtype, m, n, k, group, bits, with_pre)
    out = torch.full((m, n), float("nan"), dtype=dtype, device=device)
    int4_linear(x, qdata, s, z, group, k, act_pre_scale=pre, out=out, config=config)
    err = rel_err(out, ref)
    return err, bool(torch.isfinite(out).all()) and err < TOL[dtype]


def check_deterministic(device, dtype) -> bool:
    n, k = (1024, 4096) if device.type == "cuda" else (64, 256)
    x, (qdata, s, z), _, _ = make_case(device, dtype, 4, n, k, 128)
    cfg = KernelConfig("gemm", 64, 128, split_k=8, block_m=16)
    a = int4_linear(x, qdata, s, z, 128, k, config=cfg)
    b = int4_linear(x, qdata, s, z, 128, k, config=cfg)
    return torch.equal(a, b)


def check_fused_reduce(device, dtype, calls: int) -> list[tuple[str, bool]]:
    """The in-kernel split-K sum (last program per tile) against the reduce launch, bit for bit, over many calls.

    A memory-ordering race (a partial read before it is written, a counter not back at 0) shows as a
    mismatch in some call; one call per config would rarely catch it.
    """
    n, k = (4096, 4096) if device.type == "cuda" else (64, 256)
    results = []
    cases = [(1, KernelConfig("gemv", 64, 256, split_k=16, num_warps=2)),
             (2, KernelConfig("gemv", 64, 256, split_k=8, block_m=2, num_warps=2)),
             (16, KernelConfig("gemm", 64, 128, split_k=8, block_m=16, num_stages=3, prefetch=1, swap_ab=True))]
    if int4_wgmma.wgmma_available(device):  # the Gluon kernel's variants, but those wgmma_check turned off
        gluon = [(1, KernelConfig("wgmma", 64, 128, block_m=8, split_k=8)),
                 (16, KernelConfig("wgmma", 64, 128, block_m=16, split_k=4)),
                 (1, KernelConfig("wgmma", 64, 128, block_m=8, split_k=8, mma_sync=True)),
                 (16, KernelConfig("wgmma", 64, 128, block_m=16, split_k=4, prefetch=2, mma_sync=True)),
                 (16, KernelConfig("wgmma", 64, 128, block_m=16, split_k=4, prefetch=2, mma_sync=True,
                                   late_dequant=True))]
        cases += [(m, c) for m, c in gluon if configs.gluon_variant(c) not in configs.gluon_variants_off()]
    for m, base in cases:
        x, (qdata, s, z), _, _ = make_case(device, dtype, m, n, k, 128)
        fused = dataclasses.replace(base, fused_reduce=True)
        want = int4_linear(x, qdata, s, z, 128, k, config=base)
        same = all(torch.equal(int4_linear(x, qdata, s, z, 128, k, config=fused), want) for _ in range(calls))
        zero = int(tile_counters(device).abs().sum()) == 0  # each launch left its tile counters at 0
        results.append((f"fused split-K sum = reduce launch, {calls} calls, counters back at 0, M={m} {base.kind}"
                        f"{' mma.sync' if base.mma_sync else ''}{' late' if base.late_dequant else ''} "
                         f"split {base.split_k}", same and zero))
    return results


def _pdl_cases(device) -> list[tuple[int, KernelConfig]]:
    """(M, config) of each way a call launches two kernels or more: the GEMV and the GEMM (with its activation
    launch, and in column order) split with the reduce launch or the in-kernel sum, and the Gluon kernels."""
    cases = [(1, KernelConfig("gemv", 64, 256, split_k=8, num_warps=2)),
             (1, KernelConfig("gemv", 64, 256, split_k=8, num_warps=2, fused_reduce=True)),
             (2, KernelConfig("gemv", 64, 256, split_k=8, block_m=2, num_warps=2)),
             (16, KernelConfig("gemm", 64, 128, split_k=4, block_m=16, num_stages=3, prefetch=1, swap_ab=True)),
             (16, KernelConfig("gemm", 64, 128, split_k=4, block_m=16, num_stages=3, prefetch=1, swap_ab=True,
                               natural_order=True))]
    if int4_wgmma.wgmma_available(device):
        cases += [(1, KernelConfig("staged", 64, 256, split_k=8, num_warps=2)),
                  (16, KernelConfig("wgmma", 64, 128, block_m=16, split_k=4)),
                  (16, KernelConfig("wgmma", 64, 128, block_m=16, split_k=4, fused_reduce=True))]
    return cases


def check_pdl(device, dtype, calls: int = 4) -> list[tuple[str, bool]]:
    """Launches with programmatic dependent launch (``kernels/pdl.py``) against launches without, bit for bit:
    eager, and ``calls`` calls back to back captured in one CUDA graph and replayed (where PDL lets a kernel be
    placed before the one ahead ends). Sets ``pdl.ENABLED`` back to what it was."""
    was, results = pdl.ENABLED, []
    try:
        for m, cfg in _pdl_cases(device):
            label = f"PDL launches = plain launches, eager and {calls} calls in a CUDA graph, M={m} {cfg}"
            try:
                results.append((label, _pdl_matches(device, dtype, m, cfg, calls)))
            except Exception as exc:  # e.g. a capture that refuses the launch: a failure, and the checks go on
                first = (str(exc).strip().splitlines() or [""])[0][:200]
                results.append((f"{label}: {type(exc).__name__}: {first}", False))
    finally:
        pdl.ENABLED = was
    return results


def _pdl_matches(device, dtype, m: int, cfg: KernelConfig, calls: int) -> bool:
    """``check_pdl``'s comparison for one config at 4096 x 4096 (``pdl.ENABLED`` left on)."""
    n = k = 4096
    cases = [make_case(device, dtype, m, n, k, 128)[:2] for _ in range(calls)]
    pdl.ENABLED = False
    want = [int4_linear(x, q, s, z, 128, k, config=cfg) for x, (q, s, z) in cases]
    pdl.ENABLED = True
    eager = all(torch.equal(int4_linear(x, q, s, z, 128, k, config=cfg), w)
                for (x, (q, s, z)), w in zip(cases, want))
    outs = [torch.full_like(w, float("nan")) for w in want]
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):  # compiled with PDL before the capture
        for (x, (q, s, z)), out in zip(cases, outs):
            int4_linear(x, q, s, z, 128, k, out=out, config=cfg)
    torch.cuda.current_stream().wait_stream(stream)
    for out in outs:
        out.fill_(float("nan"))
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        for (x, (q, s, z)), out in zip(cases, outs):
            int4_linear(x, q, s, z, 128, k, out=out, config=cfg)
    graph.replay()
    torch.cuda.synchronize()
    replayed = all(torch.equal(out, w) for out, w in zip(outs, want))
    return eager and replayed


def _timed_alternately(m: int, config_for: dict, before=lambda setting: None) -> dict:
    """{setting: [ms, ms]}: 8192 x 8192 at M = ``m`` timed as the tuner times (``configs.time_configs``: CUDA graph
    over weight copies from HBM) with each setting's config, the settings in turn, twice; ``before(setting)``
    runs ahead of each timing."""
    times = {setting: [] for setting in config_for}
    for setting in list(config_for) * 2:
        before(setting)
        times[setting] += [ms for _, ms in configs.time_configs(m, 8192, 8192, 128, [config_for[setting]])
                           if ms is not None]
    return times


def _us(times: list) -> str:
    return ", ".join(f"{t * 1e3:.1f}" for t in times)


def pdl_effect(device) -> None:
    """The default picks at 8192 x 8192, M = 1 and 16, timed without and with PDL, twice each, alternating, in this
    process ("PDL effect" lines)."""
    was = pdl.ENABLED
    try:
        for m in (1, 16):
            cfg = configs.select_config(m, 8192, 8192, 128, device)
            times = _timed_alternately(m, {False: cfg, True: cfg}, before=lambda on: setattr(pdl, "ENABLED", on))
            print(f"PDL effect, 8192 x 8192 M={m} {cfg}: without {_us(times[False])} us, with {_us(times[True])} us",
                  flush=True)
    finally:
        pdl.ENABLED = was


def l2_effect(device) -> None:
    """The default picks at 8192 x 8192, M = 1 and 16, timed without and with each program asking L2 for its first
    32 weight tiles (``l2_prefetch``; the tuning has candidates with it too), twice each, alternating, in this
    process: "L2 effect" lines. A pick whose kernel takes no request is reported as such."""
    for m in (1, 16):
        cfg = configs.select_config(m, 8192, 8192, 128, device)
        if cfg.kind == "dequant":
            print(f"L2 effect, 8192 x 8192 M={m} {cfg}: no request in this kernel", flush=True)
            continue
        times = _timed_alternately(m, {tiles: dataclasses.replace(cfg, l2_prefetch=tiles) for tiles in (0, 32)})
        print(f"L2 effect, 8192 x 8192 M={m} {cfg}: without {_us(times[0])} us, with 32 tiles {_us(times[32])} us",
              flush=True)


def check_module(device, dtype, mode, fused=False, wgmma=False) -> list[tuple[str, float, bool]]:
    """One Linear, compiled once per mode, called at M = 1, 3, 16, 200, 16, 1 (dynamic shapes after the second).

    The M values cover the GEMV (1 row and several), the GEMM and dequantize + mm. ``fused``: the M
    buckets 1, 4 and 16 take split-K configs with the in-kernel sum (recorded as tuned for this GPU
    while the check runs), so the counters' launches go through torch.compile and CUDA graphs; at 16 in
    column order (``natural_order``), one launch in all. ``wgmma``: those buckets take the Gluon kernels
    instead, through ``awq_ao::int4_linear_opaque`` (an opaque op): the staged GEMV at 1, the wgmma kernel
    split and unsplit at 4 and 16. Neither: the split GEMV and its reduce launch at 1 (``FORCED_PLAIN``), the
    defaults elsewhere. Each M = 1 pick and the fused M = 16 GEMM ask L2 for their first weight tiles
    (``l2_prefetch``).
    """
    torch.manual_seed(0)
    torch._dynamo.reset()  # Linear.forward is one code object for every module: keep the caches apart
    lin = torch.nn.Linear(1024, 768, dtype=dtype, device=device)
    lin.weight = torch.nn.Parameter(AWQInt4Tensor.from_float(lin.weight.detach(), 4, 64), requires_grad=False)
    fn = lin if mode == "eager" else torch.compile(
        lin, fullgraph=True, mode="reduce-overhead" if mode == "reduce-overhead" else None)
    forced = FORCED_WGMMA if wgmma else FORCED_FUSED if fused else FORCED_PLAIN
    label = _module_label(dtype, mode, fused, wgmma)
    from torch._dynamo.utils import counters as dynamo_counters

    skips_before = dynamo_counters["inductor"]["cudagraph_skips"]
    with _forced_configs(device, forced):
        results = _module_cases(fn, lin, dtype, label)
    if mode == "reduce-overhead":  # the kept split-K counters, updated in place, must not cost the CUDA graphs
        skips = dynamo_counters["inductor"]["cudagraph_skips"] - skips_before
        results.append((f"{label}: CUDA graphs kept ({skips} skipped)", 0.0, skips == 0))
    if mode == "compile" and fused:
        results.append(_kept_counters_not_cloned(lin, dtype, forced))
    if mode == "compile" and not (fused or wgmma):
        results.append(_dynamic_graph_calls_the_opaque_op(lin, dtype))
    return results


@contextlib.contextmanager
def _forced_configs(device, forced):
    """Record ``forced`` {(M bucket, config)} as this GPU's tuned picks for the module checks' 768 x 1024 g64
    weight while the block runs; the tuned table as it was afterwards."""
    name = torch.cuda.get_device_name() if device.type == "cuda" else "cpu"
    saved = dict(configs._TUNED)
    for bucket, cfg in forced:
        configs.record(name, bucket, 768, 1024, 64, cfg)
    try:
        yield
    finally:
        configs._TUNED.clear()
        configs._TUNED.update(saved)


def compiled_code_per_graph(fn, inputs) -> list[str]:
    """Inductor's output code of each graph ``fn`` compiles while called on ``inputs`` in turn, in order.

    Not ``torch._inductor.utils.run_and_get_code``: it resets Dynamo before its one call, so a graph traced for
    every M (the second size's recompile) never forms there; the M = 5 graph it showed was a static one."""
    from unittest import mock

    from torch._inductor.graph import GraphLowering

    codes: list[str] = []
    with mock.patch.object(GraphLowering, "save_output_code", codes.append), torch.no_grad():
        for x in inputs:
            fn(x)
    return codes


def _kept_counters_not_cloned(lin, dtype, forced) -> tuple[str, float, bool]:
    """Inductor's code for the M=1 fused GEMV updates the kept tile counters in place: no buffer of their size is
    allocated (a per-call clone of them would cost what the reduce launch did)."""
    from awq_ao.kernels.splitk import COUNTER_SLOTS

    with _forced_configs(lin.weight.device, forced):
        torch._dynamo.reset()
        fn = torch.compile(lin, fullgraph=True)
        code = compiled_code_per_graph(fn, [torch.randn(1, 1024, dtype=dtype, device=lin.weight.device)])
    text = "\n".join(code)
    cloned = f"empty_strided_cuda(({COUNTER_SLOTS}, )" in text  # how Inductor allocates a copy of them
    return (f"module {str(dtype)[6:]} compile fused: kept tile counters updated in place (no clone)", 0.0,
            not cloned)


def _dynamic_graph_calls_the_opaque_op(lin, dtype) -> tuple[str, float, bool]:
    """Inductor's code for the graph traced for every M (compiled at M = 3, then at 5, the second size, which
    Dynamo recompiles with a symbolic M) calls ``awq_ao::int4_linear_opaque``, which picks the kernels by each
    call's M; a 200-row call through it is right."""
    device = lin.weight.device
    torch._dynamo.reset()
    fn = torch.compile(lin, fullgraph=True)
    codes = compiled_code_per_graph(fn, [torch.randn(m, 1024, dtype=dtype, device=device) for m in (3, 5)])
    with torch.no_grad():
        x = torch.randn(200, 1024, dtype=dtype, device=device)
        err = rel_err(fn(x), F.linear(x.double(), lin.weight.dequantize(torch.float64), lin.bias.double()))
    opaque = len(codes) == 2 and "int4_linear_opaque" in codes[-1]
    return (f"{_module_label(dtype, 'compile')}: the graph for every M calls the opaque op ({opaque}), M=200", err,
            opaque and err < TOL[dtype])


def _module_cases(fn, lin, dtype, label) -> list[tuple[str, float, bool]]:
    device = lin.weight.device
    results = []
    with torch.no_grad():
        for m in (1, 3, 16, 200, 16, 1):
            for _ in range(3):  # reduce-overhead warms up, records, then replays a graph
                x = torch.randn(m, 1024, dtype=dtype, device=device)
                y = fn(x).clone()
            expected = F.linear(x.double(), lin.weight.dequantize(torch.float64), lin.bias.double())
            err = rel_err(y, expected)
            results.append((f"{label} M={m}", err,
                            bool(torch.isfinite(y).all()) and err < TOL[dtype]))
    return results


def report(label: str, err: float, ok: bool) -> int:
    print(f"{'ok  ' if ok else 'FAIL'} {label}: rel err {err:.2e}", flush=True)
    return 0 if ok else 1


def correctness(device, quick: bool, m_values=None) -> int:
    on_gpu = device.type == "cuda"
    failures = 0
    dtypes = [torch.bfloat16, torch.float16] if on_gpu else [torch.float16, torch.float32]
    # 1. every candidate config the tuner may pick
    if on_gpu and not quick:
        for m in m_values or (1, 2, 4, 16, 64, 128, 512):
            for cfg in configs.candidate_configs(m, 4096, 4096, 128, device):
                # column order: 1 or 2 launches; wgmma: the pre-scale is applied as the activation is staged
                for with_pre in (False, True) if cfg.natural_order or cfg.kind in ("wgmma", "staged") else (False,):
                    try:
                        err, ok = check_kernel(device, torch.bfloat16, m, 4096, 4096, 128, with_pre=with_pre,
                                               config=cfg)
                    except Exception as exc:  # the compiler refuses a config (shared memory): the tuner skips it too
                        print(f"skip {cfg}: {type(exc).__name__}: {str(exc).splitlines()[0][:100]}")
                        break
                    failures += report(f"candidate M={m}{' pre' if with_pre else ''} {cfg}", err, ok)
                    if cfg.fused_reduce:
                        configs.FUSED_REDUCE_CANDIDATES &= ok
                    if cfg.kind == "staged":  # a wrong staged GEMV stays out of the tuning
                        configs.STAGED_CANDIDATES &= ok
    # 2. default dispatch over M, tails, groups, bits, pre-scale
    shapes = [(1, 48, 80, 16, 4), (3, 40, 96, 32, 4), (5, 64, 130, 32, 4), (1, 40, 200, 64, 3),
              (130, 24, 72, 32, 4)] if quick else [
        (1, 4096, 4096, 128, 4), (1, 1000, 4100, 64, 4), (2, 4096, 4096, 128, 4), (3, 1536, 576, 64, 3),
        (4, 1000, 4100, 32, 4), (7, 1000, 4100, 32, 4),
        (16, 14336, 4096, 128, 4), (33, 576, 576, 32, 4), (64, 4096, 1000, 128, 2), (128, 4096, 4096, 128, 4),
        (300, 1000, 4100, 128, 4)]
    for dtype in dtypes:
        for m, n, k, group, bits in (shapes if dtype != torch.float16 or quick else shapes[1::2]):
            for with_pre in (False, True):
                err, ok = check_kernel(device, dtype, m, n, k, group, bits, with_pre)
                failures += report(f"{str(dtype)[6:]} M={m} N={n} K={k} g={group} w{bits} pre={with_pre}", err, ok)
    # 3. determinism of split-K
    ok = check_deterministic(device, dtypes[0])
    failures += report("split-K bit-identical across runs", 0.0, ok)
    for label, ok in check_fused_reduce(device, dtypes[0], 200 if on_gpu else 2):
        failures += report(label, 0.0, ok)
        configs.FUSED_REDUCE_CANDIDATES &= ok  # a wrong in-kernel sum stays out of the tuning
    return failures


def _module_label(dtype, mode, fused=False, wgmma=False) -> str:
    return f"module {str(dtype)[6:]} {mode}{' fused' if fused else ''}{' wgmma' if wgmma else ''}"


def _module_results(device, dtype, mode, fused=False, wgmma=False) -> list[tuple[str, float, bool]]:
    """``check_module``'s results, or one failure naming the exception (the checks after it still run)."""
    try:
        return check_module(device, dtype, mode, fused, wgmma)
    except Exception as exc:  # e.g. a compile error: the tuning and the timing table still follow
        first = (str(exc).strip().splitlines() or [""])[0][:300]
        return [(f"{_module_label(dtype, mode, fused, wgmma)}: {type(exc).__name__}: {first}", float("nan"), False)]


def module_checks(device) -> int:
    """4. an nn.Module eager, compiled (fullgraph) and under CUDA graphs (reduce-overhead)."""
    failures = 0
    for dtype, mode, fused in ((torch.bfloat16, "eager", False), (torch.bfloat16, "compile", False),
                               (torch.bfloat16, "reduce-overhead", False), (torch.float16, "reduce-overhead", False),
                               (torch.bfloat16, "compile", True), (torch.bfloat16, "reduce-overhead", True)):
        for label, err, ok in _module_results(device, dtype, mode, fused):
            failures += report(label, err, ok)
            if fused:
                configs.FUSED_REDUCE_CANDIDATES &= ok
    if int4_wgmma.wgmma_available(device):  # the Gluon kernel through its opaque op, compiled and in CUDA graphs
        for dtype, mode in ((torch.bfloat16, "eager"), (torch.bfloat16, "compile"), (torch.float16, "compile"),
                            (torch.bfloat16, "reduce-overhead")):
            for label, err, ok in _module_results(device, dtype, mode, wgmma=True):
                failures += report(label, err, ok)
    return failures


class _Tee:
    """Write to the console and to a log file, flushing both: a run cut short keeps its log."""

    def __init__(self, stream, path: str):
        self.stream, self.file = stream, open(path, "a")

    def write(self, text: str) -> int:
        self.stream.write(text)
        self.file.write(text)
        self.file.flush()
        return len(text)

    def flush(self) -> None:
        self.stream.flush()
        self.file.flush()


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--quick", action="store_true", help="small shapes only (for the interpreter)")
    parser.add_argument("--no-bench", action="store_true", help="correctness only")
    parser.add_argument("--m", type=int, nargs="+", default=None,
                        help="only these M values for the candidate checks and the table (a short run)")
    parser.add_argument("--shapes", type=int, default=None, help="only the first N shapes of the table")
    parser.add_argument("--out", default=None,
                        help="folder for gpu_check.log, the tuned JSON and the timing table (each written as it goes)")
    args = parser.parse_args(argv)
    console = sys.stdout
    if args.out:
        os.makedirs(args.out, exist_ok=True)
        sys.stdout = _Tee(console, os.path.join(args.out, "gpu_check.log"))
    try:
        return _run(args)
    finally:
        sys.stdout = console


def _run(args) -> int:
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        print("error: no CUDA device; for a dry run use TRITON_INTERPRET=1 ... --device cpu --quick")
        return 2
    if device.type == "cuda":
        import triton

        print(f"device: {torch.cuda.get_device_name()}, torch {torch.__version__}, triton {triton.__version__}")
    torch.manual_seed(0)
    start = time.perf_counter()
    failures = 0
    if device.type == "cuda" and pdl.enabled(device):  # first: a failure turns PDL off for every check after it
        for label, ok in check_pdl(device, torch.bfloat16):
            failures += report(label, 0.0, ok)
            pdl.ENABLED &= ok
        if not pdl.ENABLED:
            print("programmatic dependent launch failed a check above: off for the rest of this run", flush=True)
    failures += correctness(device, args.quick, args.m)
    print(f"kernel correctness: {failures} failed ({time.perf_counter() - start:.0f} s)", flush=True)
    if device.type == "cuda":
        failures += module_checks(device)
        print(f"module checks done ({time.perf_counter() - start:.0f} s)", flush=True)
    if not configs.FUSED_REDUCE_CANDIDATES:
        print("the in-kernel split-K sum failed a check above: the tuning leaves it out", flush=True)
    if device.type == "cuda" and not args.no_bench and pdl.enabled(device):
        pdl_effect(device)
    if device.type == "cuda" and not args.no_bench:
        l2_effect(device)
    if device.type == "cuda" and not args.no_bench:
        import bench_kernels

        out = args.out or os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")
        name = torch.cuda.get_device_name().replace(" ", "_").lower()
        bench_argv = ["--tune", "--verbose", "--save-tuned", os.path.join(out, f"tuned_{name}.json"),
                      "--out", os.path.join(out, f"kernels_{name}.md")]
        bench_argv += (["--quick"] if args.quick else []) + (["--shapes", str(args.shapes)] if args.shapes else [])
        bench_kernels.main(bench_argv + (["--m", *map(str, args.m)] if args.m else []))
    print(f"{failures} failed ({time.perf_counter() - start:.0f} s)", flush=True)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
