"""The Triton kernels against the reference in awq_ao/quant.py, through every path.

On a machine without a GPU these run under TRITON_INTERPRET=1 (set in
conftest.py) on CPU tensors: fp16 / fp32 only there, small shapes, and launch
configs forced small so that every path (GEMV, GEMM, split-K, prefetch) runs.
"""

import dataclasses
import os
import random
import re

import pytest
import torch
import triton.language as tl
from helpers import HAS_CUDA, benchmark_module, quantized_case, rel_err

from awq_ao import AWQInt4Tensor, quant
from awq_ao.kernels import KernelConfig, int4_linear

DEVICE = "cuda" if HAS_CUDA else "cpu"
INTERPRETED = os.environ.get("TRITON_INTERPRET") == "1"
pytestmark = pytest.mark.skipif(
    not HAS_CUDA and not INTERPRETED, reason="needs a GPU or TRITON_INTERPRET=1"
)
DTYPES = [torch.float16, torch.float32] + ([torch.bfloat16] if HAS_CUDA else [])
TOL = {torch.float32: 2e-3 if HAS_CUDA else 1e-5, torch.float16: 2e-3, torch.bfloat16: 1e-2}

# Every kernel path, with tiles small enough for the interpreter.
PATHS = {
    "gemv": KernelConfig("gemv", block_n=32, block_k=64),
    "gemv-splitk-prefetch": KernelConfig("gemv", block_n=16, block_k=32, split_k=3, prefetch=True),
    "gemm": KernelConfig("gemm", block_n=32, block_k=64, block_m=16),
    "gemm-splitk": KernelConfig("gemm", block_n=16, block_k=32, block_m=16, split_k=2),
    "gemm-swap-ab": KernelConfig("gemm", block_n=32, block_k=32, block_m=16, split_k=2, swap_ab=True),
    "gemm-splitk-prefetch": KernelConfig("gemm", block_n=16, block_k=32, block_m=16, split_k=3, prefetch=True),
    "gemm-swap-ab-prefetch": KernelConfig("gemm", block_n=32, block_k=32, block_m=16, swap_ab=True, prefetch=True),
    "gemv-2-rows": KernelConfig("gemv", block_n=32, block_k=64, block_m=2),
    "gemv-prefetch-2-splitk": KernelConfig("gemv", block_n=16, block_k=32, split_k=3, prefetch=2),
    "gemv-4-rows-splitk-prefetch": KernelConfig("gemv", block_n=16, block_k=32, block_m=4, split_k=3, prefetch=True),
    "gemv-2-rows-multigroup": KernelConfig("gemv", block_n=16, block_k=256, block_m=2, split_k=2),
    "gemv-fused-reduce": KernelConfig("gemv", block_n=16, block_k=32, split_k=3, fused_reduce=True),
    "gemv-4-rows-fused-reduce": KernelConfig("gemv", block_n=16, block_k=64, block_m=4, split_k=4,
                                             fused_reduce=True),
    "gemm-fused-reduce": KernelConfig("gemm", block_n=16, block_k=32, block_m=16, split_k=3, fused_reduce=True),
    "gemm-swap-ab-fused-reduce": KernelConfig("gemm", block_n=32, block_k=32, block_m=16, split_k=2, swap_ab=True,
                                              prefetch=True, fused_reduce=True),
    "gemv-shared-memory-ring": KernelConfig("gemv", block_n=16, block_k=64, split_k=2, num_stages=3),
    "gemv-2-rows-shared-memory-ring-fused": KernelConfig("gemv", block_n=16, block_k=128, block_m=2, split_k=3,
                                                         num_stages=4, fused_reduce=True),
    "gemm-natural-order": KernelConfig("gemm", block_n=32, block_k=64, block_m=16, natural_order=True),
    "gemm-swap-ab-natural-order-fused": KernelConfig("gemm", block_n=32, block_k=32, block_m=16, split_k=3,
                                                     swap_ab=True, prefetch=True, fused_reduce=True,
                                                     natural_order=True),
    "dequant-mm": KernelConfig("dequant", block_n=16, block_k=64),
    "dequant-mm-wide": KernelConfig("dequant", block_n=8, block_k=256),
}


def reference(x, q, s, z, group_size, k, pre):
    """float64: (x * pre) @ dequantize(q, s, z).T"""
    w = quant.dequantize(q, s, z, group_size, k, torch.float64)
    x = x.double() if pre is None else x.double() * pre.double()
    return x @ w.t()


def run_case(dtype, m, n, k, group_size, with_pre, config=None, bits=4, seed=0):
    gen = torch.Generator().manual_seed(seed)
    w = torch.randn(n, k, generator=gen)
    q, s, z = quant.quantize(w, bits, group_size, scale_dtype=dtype)
    x = torch.randn(m, k, generator=gen).to(dtype)
    pre = (torch.rand(k, generator=gen) + 0.5).to(dtype) if with_pre else None
    args = [t.to(DEVICE) for t in (quant.pack_int4(q), s, z)]
    out = torch.full((m, n), float("nan"), dtype=dtype, device=DEVICE)  # every element must be written
    y = int4_linear(x.to(DEVICE), *args, group_size, k, act_pre_scale=None if pre is None else pre.to(DEVICE),
                    out=out, config=config)
    assert y.shape == (m, n) and y.dtype == dtype
    assert torch.isfinite(y).all()
    return rel_err(y.cpu(), reference(x, q, s, z, group_size, k, pre))


@pytest.mark.parametrize("path", sorted(PATHS))
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("with_pre", [False, True])
def test_every_path_matches_reference(path, dtype, with_pre):
    """A random shape with tails in M, N and K (seeded per case), for each path."""
    rng = random.Random(f"{path}-{dtype}-{with_pre}")
    group_size = rng.choice([32, 64, 128])
    m = rng.randint(1, 20)
    n = rng.randint(17, 70)
    k = rng.randint(2, 4) * group_size - rng.randint(1, group_size - 1)  # never a multiple of the group
    err = run_case(dtype, m, n, k, group_size, with_pre, PATHS[path], seed=rng.randint(0, 1000))
    assert err < TOL[dtype], (path, m, n, k, group_size, err)


@pytest.mark.parametrize("group_size", [32, 64, 128])
@pytest.mark.parametrize("path", ["gemv", "gemm"])
def test_group_sizes(group_size, path):
    assert run_case(torch.float16, 3, 40, 2 * group_size, group_size, False, PATHS[path]) < TOL[torch.float16]


@pytest.mark.parametrize("rows", [1, 2, 4])
@pytest.mark.parametrize("dtype", DTYPES)
def test_gemv_tile_spanning_groups(rows, dtype):
    """BLOCK_K = 4 groups of 32: each word takes its own group's scale and zero (K tail, pre-scale, split-K)."""
    cfg = KernelConfig("gemv", block_n=16, block_k=128, block_m=rows, split_k=2)
    assert cfg.fitted(32, 512).block_k == 128
    err = run_case(dtype, 2 * rows + 1, 40, 500, 32, True, cfg)
    assert err < TOL[dtype]


@pytest.mark.parametrize("m", [1, 3, 6, 130])
def test_default_dispatch(m):
    """No config given: the heuristic picks the GEMV (1 to 4 rows), the GEMM, or dequantize + mm (M >= 128)."""
    assert run_case(torch.float16, m, 48, 200, 64, True) < TOL[torch.float16]


@pytest.mark.parametrize("bits,group_size", [(2, 8), (3, 16), (4, 256)])
def test_other_bits_and_groups(bits, group_size):
    err = run_case(torch.float16, 5, 24, 200, group_size, False, bits=bits)
    assert err < TOL[torch.float16]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("block_n,block_k", [(16, 64), (8, 256)])
def test_dequant_kernel_is_bit_exact(dtype, block_n, block_k):
    """The large-M path's dense weight equals quant.dequantize bit for bit (tails in N and K, any tile vs group)."""
    import triton

    from awq_ao.kernels.int4_dequant import _int4_dequant_kernel

    n, k, group_size = 37, 200, 64
    q, s, z = quant.quantize(torch.randn(n, k, generator=torch.Generator().manual_seed(3)), 4, group_size,
                             scale_dtype=dtype)
    words, s, z = quant.pack_int4(q).view(torch.int32).to(DEVICE), s.to(DEVICE), z.to(DEVICE)
    w = torch.full((n, k), float("nan"), dtype=dtype, device=DEVICE)
    _int4_dequant_kernel[(triton.cdiv(n, block_n), triton.cdiv(k, block_k))](
        words, s, z, s, w, n, k, words.stride(0), s.stride(0), w.stride(0),
        GROUP_SIZE=group_size, HAS_PRE_SCALE=False, BLOCK_N=block_n, BLOCK_K=block_k)
    assert torch.equal(w.cpu(), quant.dequantize(q, s.cpu(), z.cpu(), group_size, k, dtype))


@pytest.mark.parametrize("pair_order", [True, False])
@pytest.mark.parametrize("k,with_pre", [(64, False), (61, True), (1030, True)])
def test_gemm_activation_launch(k, with_pre, pair_order):
    """The launcher's copy of x for the bf16 / fp16 GEMM: x * pre, zeros from K to K_pad, the product rounded
    once to x's dtype; in pair order each 8 columns come as (0, 4, 1, 5, 2, 6, 3, 7)."""
    from awq_ao.kernels.int4_matmul import gemm_activation

    gen = torch.Generator().manual_seed(k)
    x = torch.randn(3, k, generator=gen).to(torch.float16)
    pre = (torch.rand(k, generator=gen) + 0.5).to(torch.float16) if with_pre else None
    k_pad = (k + 63) // 64 * 64
    got = gemm_activation(x.to(DEVICE), None if pre is None else pre.to(DEVICE), k_pad, lambda kernel: kernel,
                          pair_order=pair_order).cpu()
    scaled = x if pre is None else (x.float() * pre.float()).to(torch.float16)
    expected = torch.nn.functional.pad(scaled, (0, k_pad - k))
    if pair_order:  # position 8j+2s+h: column 8j+4h+s
        expected = expected.view(3, k_pad // 8, 2, 4).transpose(2, 3).reshape(3, k_pad)
    assert got.shape == (3, k_pad) and torch.equal(got, expected)


@pytest.mark.parametrize("natural,with_pre,fused,launches", [
    (False, False, False, ["_gemm_x_kernel", "_int4_gemm_kernel", "_splitk_reduce_kernel"]),
    (True, False, False, ["_int4_gemm_kernel", "_splitk_reduce_kernel"]),
    (True, False, True, ["_int4_gemm_kernel"]),
    (True, True, True, ["_gemm_x_kernel", "_int4_gemm_kernel"]),
])
def test_gemm_launches(natural, with_pre, fused, launches):
    """The fp16 GEMM's launches: in pair order the activation takes a launch of its own; in column order
    (``natural_order``) only with an ``act_pre_scale``, so with the fused split-K sum on the kept counters the
    whole product is one launch. Each way matches the float64 reference."""
    from awq_ao.kernels import launch_int4_linear
    from awq_ao.kernels.splitk import tile_counters

    gen = torch.Generator().manual_seed(4)
    m, n, k, group_size = 5, 40, 250, 64
    q, s, z = quant.quantize(torch.randn(n, k, generator=gen), 4, group_size, scale_dtype=torch.float16)
    x = torch.randn(m, k, generator=gen).to(torch.float16)
    pre = (torch.rand(k, generator=gen) + 0.5).to(torch.float16) if with_pre else None
    cfg = KernelConfig("gemm", 16, 64, block_m=16, split_k=2, swap_ab=True, prefetch=1, fused_reduce=fused,
                       natural_order=natural)
    names = []

    def launcher(kernel):
        names.append(kernel.fn.__name__ if hasattr(kernel, "fn") else kernel.__name__)
        return kernel

    args = [t.to(DEVICE) for t in (quant.pack_int4(q), s, z)]
    y = launch_int4_linear(x.to(DEVICE), *args, None if pre is None else pre.to(DEVICE), None, group_size, k,
                           launcher=launcher, config=cfg, counters=tile_counters(DEVICE))
    assert names == launches
    assert rel_err(y.cpu(), reference(x, q, s, z, group_size, k, pre)) < TOL[torch.float16]


def test_split_k_is_deterministic():
    gen = torch.Generator().manual_seed(1)
    q, s, z = quant.quantize(torch.randn(32, 256, generator=gen), 4, 32, scale_dtype=torch.float16)
    x = torch.randn(3, 256, generator=gen, dtype=torch.float16).to(DEVICE)
    args = [t.to(DEVICE) for t in (quant.pack_int4(q), s, z)]
    cfg = PATHS["gemm-splitk"]
    assert torch.equal(int4_linear(x, *args, 32, 256, config=cfg), int4_linear(x, *args, 32, 256, config=cfg))


@pytest.mark.parametrize("dtype", [torch.float16, torch.float32])
@pytest.mark.parametrize("kind", ["gemv", "gemm", "gemm-natural"])
def test_fused_reduce_is_bit_identical_to_the_reduce_launch(kind, dtype):
    """The last program's sum of the partials equals the second launch's bit for bit (same split order), over
    repeated calls and several output tiles and row blocks: on the kept counters (``int4_linear``: each call leaves
    them at 0 for the next) and on counters of the call's own (no ``counters`` given: the fp16 GEMM in pair order
    takes the activation launch, which zeroes them, fp32 and the column-order GEMM a ``torch.zeros``)."""
    from awq_ao.kernels import launch_int4_linear

    gen = torch.Generator().manual_seed(2)
    n, k, group_size = 40, 320, 64
    q, s, z = quant.quantize(torch.randn(n, k, generator=gen), 4, group_size, scale_dtype=dtype)
    args = [t.to(DEVICE) for t in (quant.pack_int4(q), s, z)]
    m = 3 if kind == "gemv" else 20
    base = KernelConfig(kind.split("-")[0], block_n=16, block_k=64, block_m=2 if kind == "gemv" else 16, split_k=4,
                        natural_order=kind == "gemm-natural")
    fused = dataclasses.replace(base, fused_reduce=True)
    assert fused.fitted(group_size, k).fused_reduce and not base.fitted(group_size, k).fused_reduce
    for call in range(3):
        x = torch.randn(m, k, generator=gen).to(dtype).to(DEVICE)
        want = int4_linear(x, *args, group_size, k, config=base)
        assert torch.equal(int4_linear(x, *args, group_size, k, config=fused), want), call
        own = launch_int4_linear(x, *args, None, None, group_size, k, config=fused)
        assert torch.equal(own, want), call


def test_fused_reduce_needs_a_split():
    assert not KernelConfig("gemv", 16, 64, split_k=1, fused_reduce=True).fitted(64, 256).fused_reduce
    assert not KernelConfig("gemv", 16, 64, split_k=8, fused_reduce=True).fitted(64, 64).fused_reduce  # one K tile
    assert not KernelConfig("dequant", 16, 64, split_k=8, fused_reduce=True).fitted(64, 256).fused_reduce


def test_non_contiguous_out_is_refused():
    """The kernels write y [M, N] with the partials' row stride: a strided ``out`` is refused by name."""
    q, s, z = quant.quantize(torch.randn(16, 64), 4, 32, scale_dtype=torch.float16)
    x = torch.randn(2, 64, dtype=torch.float16, device=DEVICE)
    out = torch.empty(16, 2, dtype=torch.float16, device=DEVICE).t()
    with pytest.raises(ValueError, match="out must be contiguous"):
        int4_linear(x, *[t.to(DEVICE) for t in (quant.pack_int4(q), s, z)], 32, 64, out=out,
                    config=KernelConfig("gemv", 16, 32))


def test_wrong_in_features_is_refused():
    q, s, z = quant.quantize(torch.randn(16, 64), 4, 32, scale_dtype=torch.float16)
    x = torch.randn(2, 63, dtype=torch.float16, device=DEVICE)
    with pytest.raises(ValueError, match="63 features"):
        int4_linear(x, *[t.to(DEVICE) for t in (quant.pack_int4(q), s, z)], 32, 64)


@pytest.mark.parametrize("m", [1, 2, 5, 130])  # GEMV, GEMV with 2 rows, GEMM, dequantize + mm
def test_triton_op_matches_reference(m):
    """The torch.library.triton_op wrapper, eager (on CPU tensors it runs interpreted)."""
    qw = AWQInt4Tensor.from_float(torch.randn(48, 80, dtype=torch.float16), 4, 16,
                                  act_pre_scale=torch.rand(80, dtype=torch.float16) + 0.5)
    qw = qw.to(DEVICE)
    x = torch.randn(m, 80, dtype=torch.float16, device=DEVICE)
    y = torch.ops.awq_ao.int4_linear_triton(x, qw.qdata, qw.scale, qw.zero_point, qw.act_pre_scale, 16, 80)
    q = quant.unpack_int4(qw.qdata.cpu())
    expected = reference(x.cpu(), q, qw.scale.cpu(), qw.zero_point.cpu(), 16, 80, qw.act_pre_scale.cpu())
    assert rel_err(y.cpu(), expected) < TOL[torch.float16]


def test_triton_op_fake_shape():
    from torch._subclasses.fake_tensor import FakeTensorMode

    with FakeTensorMode():
        x = torch.empty(3, 64, dtype=torch.float16)
        y = torch.ops.awq_ao.int4_linear_triton(
            x, torch.empty(40, 32, dtype=torch.uint8), torch.empty(40, 2, dtype=torch.float16),
            torch.empty(40, 2, dtype=torch.uint8), None, 32, 64)
    assert y.shape == (3, 40) and y.dtype == torch.float16


@pytest.mark.skipif(not HAS_CUDA, reason="needs a GPU")
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("mode", [None, "reduce-overhead"])
def test_cuda_linear_compiled(dtype, mode):
    lin = torch.nn.Linear(256, 128, dtype=dtype, device="cuda")
    lin.weight = torch.nn.Parameter(AWQInt4Tensor.from_float(lin.weight.detach(), 4, 64), requires_grad=False)
    compiled = torch.compile(lin, fullgraph=True, mode=mode)
    with torch.no_grad():
        for m in (1, 3, 16, 64, 200):  # GEMV, GEMV with rows, GEMM, GEMM, dequantize + mm
            x = torch.randn(m, 256, dtype=dtype, device="cuda")
            expected = torch.nn.functional.linear(x, lin.weight.dequantize(), lin.bias)
            assert rel_err(compiled(x), expected) < TOL[dtype]


@pytest.mark.skipif(HAS_CUDA, reason="the CUDA run is the real check; this is its dry run")
def test_gpu_check_script_dry_run(monkeypatch):
    """benchmarks/gpu_check.py stays runnable: its correctness half, interpreted on CPU."""
    import sys

    module = benchmark_module("gpu_check")
    monkeypatch.setattr(sys, "argv", ["gpu_check.py", "--device", "cpu", "--quick"])
    assert module.main() == 0


def test_gpu_check_sees_the_graph_traced_for_every_m():
    """gpu_check's capture of Inductor's code keeps Dynamo's state between calls: the second size recompiles
    with a symbolic M (the graph whose opaque op the GPU check looks for), not a static graph of that size."""
    module = benchmark_module("gpu_check")
    lin = torch.nn.Linear(256, 96)
    lin.weight = torch.nn.Parameter(AWQInt4Tensor.from_float(lin.weight.detach(), 4, 64), requires_grad=False)
    torch._dynamo.reset()
    fn = torch.compile(lin, fullgraph=True)
    codes = module.compiled_code_per_graph(fn, [torch.randn(m, 256) for m in (3, 5, 7)])
    assert len(codes) == 2  # M = 7 reuses the graph traced for every M
    input_rows = [re.findall(r"assert_size_stride\(arg\d+_1, \((\w+), 256\)", code) for code in codes]
    assert input_rows[0] == ["3"] and len(input_rows[1]) == 1 and input_rows[1][0].startswith("s")
    assert "int4_linear_dequant" in codes[1]


def test_gemm_activation_launch_zeroes_the_tile_counters():
    """The GEMM's activation launch also zeroes the fused split-K counters, more of them than K_pad columns too."""
    from awq_ao.kernels import int4_matmul

    x = torch.randn(2, 60, dtype=torch.float16, device=DEVICE)
    for count in (5, int4_matmul.GEMM_X_BLOCK + 3):
        counters = torch.full((count,), 7, dtype=torch.int32, device=DEVICE)
        int4_matmul.gemm_activation(x, None, 64, lambda kernel: kernel, counters)
        assert torch.equal(counters.cpu(), torch.zeros(count, dtype=torch.int32))


def test_kept_tile_counters_stay_zero():
    """The fused split-K sum on the device's kept counters leaves them zero after every call (no zeroing per
    call needed); counters too few for a launch are left alone."""
    from awq_ao.kernels import splitk

    gen = torch.Generator().manual_seed(5)
    q, s, z = quant.quantize(torch.randn(40, 256, generator=gen), 4, 64, scale_dtype=torch.float16)
    args = [t.to(DEVICE) for t in (quant.pack_int4(q), s, z)]
    kept = splitk.tile_counters(DEVICE)
    assert kept is splitk.tile_counters(DEVICE) and kept.dtype == torch.int32 and kept.numel() == splitk.COUNTER_SLOTS
    for kind, rows in (("gemv", 2), ("gemm", 16)):
        cfg = KernelConfig(kind, 16, 64, block_m=rows, split_k=4, fused_reduce=True)
        x = torch.randn(5, 256, generator=gen).to(torch.float16).to(DEVICE)
        for _ in range(2):
            int4_linear(x, *args, 64, 256, config=cfg)
            assert int(kept.abs().sum()) == 0, kind

    # counters too few for the launch's output tiles are left alone: the launcher zeroes its own
    from awq_ao.kernels import launch_int4_linear

    few = torch.full((1,), 9, dtype=torch.int32, device=DEVICE)
    cfg = KernelConfig("gemv", 16, 64, split_k=4, fused_reduce=True)
    x = torch.randn(2, 256, generator=gen).to(torch.float16).to(DEVICE)
    want = int4_linear(x, *args, 64, 256, config=dataclasses.replace(cfg, fused_reduce=False))
    assert torch.equal(launch_int4_linear(x, *args, None, None, 64, 256, config=cfg, counters=few), want)
    assert int(few) == 9


def test_traced_linear_keeps_the_real_counters_out_and_the_op_body_sends_fused_sums_to_the_opaque_op(monkeypatch):
    """Under torch.compile ``ops.int4_linear`` runs on fake tensors (the subclass's linear, propagated by
    Dynamo): the kept counters, a real tensor, must not go into the op (the first H200 compile check failed
    on exactly that: "Please convert all Tensors to FakeTensors first"; passing None through a mutable
    optional argument then failed torch 2.11's fake propagation, so the op has no such argument). The
    triton_op's body reads the kept counters when it runs eagerly; traced (Inductor traces it on fake
    tensors), it sends a config with an in-kernel split-K sum to ``awq_ao::int4_linear_opaque``, which runs
    it on the kept counters."""
    from types import SimpleNamespace

    from torch._subclasses.fake_tensor import FakeTensorMode

    from awq_ao import ops
    from awq_ao.kernels import int4_matmul, splitk

    cuda0 = torch.device("cuda", 0)
    monkeypatch.setitem(splitk._TILE_COUNTERS, cuda0, torch.zeros(8, dtype=torch.int32))  # kept, and real
    with FakeTensorMode():
        w = SimpleNamespace(in_features=256, out_features=96, group_size=64, act_pre_scale=None,
                            qdata=torch.empty(96, 128, dtype=torch.uint8, device=cuda0),
                            scale=torch.empty(96, 4, dtype=torch.float16, device=cuda0),
                            zero_point=torch.empty(96, 4, dtype=torch.uint8, device=cuda0))
        y = ops.int4_linear(torch.empty(2, 3, 256, dtype=torch.float16, device=cuda0), w)
    assert y.shape == (2, 3, 96) and y.device == cuda0

    gen = torch.Generator().manual_seed(9)
    q, s, z = quant.quantize(torch.randn(40, 256, generator=gen), 4, 64, scale_dtype=torch.float16)
    args = (quant.pack_int4(q), s, z)
    x = torch.randn(3, 256, generator=gen).to(torch.float16)
    fused = KernelConfig("gemv", 16, 64, split_k=4, fused_reduce=True)
    monkeypatch.setattr(int4_matmul, "select_config", lambda *a: fused)
    seen, opaque = [], []
    launch = int4_matmul.fused_linear
    monkeypatch.setattr(int4_matmul, "fused_linear",
                        lambda *a, counters=None, **kw: seen.append(counters) or launch(*a, counters=counters, **kw))
    real_opaque = torch.ops.awq_ao.int4_linear_opaque
    monkeypatch.setattr(torch.ops.awq_ao, "int4_linear_opaque", lambda *a: opaque.append(1) or real_opaque(*a))
    want = int4_linear(x, *args, 64, 256, config=dataclasses.replace(fused, fused_reduce=False))
    kept = splitk.tile_counters("cpu")
    y = torch.ops.awq_ao.int4_linear_triton(x, *args, None, 64, 256)  # eager: the body reads the kept counters
    assert opaque == [] and seen[-1] is kept and torch.equal(y, want)
    monkeypatch.setattr(torch.compiler, "is_compiling", lambda: True)  # the body as Inductor traces it
    y = torch.ops.awq_ao.int4_linear_triton(x, *args, None, 64, 256)
    assert opaque == [1] and seen[-1] is kept and torch.equal(y, want)


def _record_l2_requests(monkeypatch) -> list[int]:
    """From here on in this test, launches run as on a GPU (``ptx.runs_ptx`` true) and the interpreter takes each
    inline-assembly op, which it cannot run, for an L2 prefetch request: the returned list collects the address
    of every request whose predicate is on, and each returns 0, as the PTX does."""
    import types

    import numpy as np
    from triton.runtime import interpreter

    from awq_ao.kernels import ptx

    asked = []

    def record(self, asm, constraints, values, type, is_pure, pack):
        assert "prefetch.global.L2" in asm, asm
        address, live = values[0].data, values[1].data
        asked.extend(int(a) for a, ok in zip(address.reshape(-1), live.reshape(-1)) if ok)
        result = interpreter.TensorHandle(np.zeros(address.shape, dtype=np.int32), tl.int32)
        return types.SimpleNamespace(get_result=lambda i: result)  # what tl.inline_asm_elementwise reads of the op

    monkeypatch.setattr(ptx, "runs_ptx", lambda t: True)
    monkeypatch.setattr(interpreter.InterpreterBuilder, "create_inline_asm", record)
    return asked


@pytest.mark.skipif(os.environ.get("TRITON_INTERPRET") != "1", reason="replays the prefetch under the interpreter")
def test_gemv_l2_prefetch_asks_for_the_first_tiles_of_each_program(monkeypatch):
    """The Triton GEMV with ``l2_prefetch`` = 2, run by the interpreter with its inline assembly replaced by a
    recorder (the interpreter has none; as on a GPU, ``ptx.runs_ptx`` made true): each program asks L2 for the
    first two 256-column tiles of its rows and split, one 128-byte line per row and tile, and nothing past the
    last row (N = 100 of 64-row tiles) or its split's end (5 tiles in 3 splits: 2, 2, 1); the output is the
    same as without the prefetch."""
    x, qdata, scale, zero, pre, _ = quantized_case(torch.float16, 1, 100, 1280, 128, False, 6)
    cfg = KernelConfig("gemv", 64, 256, split_k=3, num_warps=2)
    y0 = int4_linear(x, qdata, scale, zero, 128, 1280, config=cfg)
    asked = _record_l2_requests(monkeypatch)
    y2 = int4_linear(x, qdata, scale, zero, 128, 1280, config=dataclasses.replace(cfg, l2_prefetch=2))
    row_bytes = 1280 // 2
    tiles_of_split = [(0, 1), (2, 3), (4,)]  # 5 tiles of 256 columns, 2 per split
    expected = sorted(qdata.data_ptr() + n * row_bytes + t * 128 for n in range(100)
                      for tiles in tiles_of_split for t in tiles[:2])
    assert sorted(asked) == expected
    assert torch.equal(y0, y2)


@pytest.mark.skipif(os.environ.get("TRITON_INTERPRET") != "1", reason="replays the prefetch under the interpreter")
def test_gemm_l2_prefetch_asks_for_the_first_tiles_of_each_program(monkeypatch):
    """The tensor-core GEMM (swapped, fp32 activations: no other inline assembly) with ``l2_prefetch`` = 3 asks L2,
    per program, for its first three 128-column tiles (64 bytes of a row each; the request names the tile's first
    word, so two tiles share a 128-byte line), nothing past its split's end or the last row (N = 72 of 64-row
    tiles), once per M block; the output is the same as without."""
    x, qdata, scale, zero, pre, _ = quantized_case(torch.float32, 20, 72, 640, 128, True, 7)
    cfg = KernelConfig("gemm", 64, 128, block_m=16, split_k=2, num_stages=3, swap_ab=True, prefetch=1)
    y0 = int4_linear(x, qdata, scale, zero, 128, 640, act_pre_scale=pre, config=cfg)
    asked = _record_l2_requests(monkeypatch)
    y3 = int4_linear(x, qdata, scale, zero, 128, 640, act_pre_scale=pre, config=dataclasses.replace(cfg, l2_prefetch=3))
    row_bytes = 640 // 2
    splits = [(0, 1, 2), (3, 4)]  # 5 tiles of 128 columns in 2 splits
    m_blocks = 2  # 20 rows in blocks of 16
    expected = sorted(qdata.data_ptr() + n * row_bytes + t * 64 for n in range(72) for tiles in splits
                      for t in tiles[:3] for _ in range(m_blocks))
    assert sorted(asked) == expected
    assert torch.equal(y0, y3)


def test_gpu_check_times_the_picks_without_and_with_the_l2_prefetch(monkeypatch, capsys):
    """gpu_check.l2_effect: at M = 1 and 16 the pick is timed (as the tuner times) without and with 32 tiles asked
    of L2, alternating, twice each, and printed as an "L2 effect" line; a dequant pick is named as taking none."""
    from awq_ao.kernels import configs

    check = benchmark_module("gpu_check")
    picks = {1: KernelConfig("gemv", 64, 256, split_k=8, num_warps=2), 16: KernelConfig("dequant", 16, 256)}
    monkeypatch.setattr(configs, "select_config", lambda m, n, k, g, device: picks[m])
    timed = []

    def time_configs(m, n, k, group, cfgs):
        timed.append((m, [c.l2_prefetch for c in cfgs]))
        return [(c, (17.5 if c.l2_prefetch == 0 else 15.5) * 1e-3) for c in cfgs]

    monkeypatch.setattr(configs, "time_configs", time_configs)
    check.l2_effect(torch.device("cpu"))
    lines = capsys.readouterr().out.strip().splitlines()
    assert timed == [(1, [0]), (1, [32]), (1, [0]), (1, [32])]
    assert lines[0].startswith("L2 effect, 8192 x 8192 M=1") and lines[0].endswith(
        "without 17.5, 17.5 us, with 32 tiles 15.5, 15.5 us")
    assert lines[1].startswith("L2 effect, 8192 x 8192 M=16") and lines[1].endswith("no request in this kernel")
