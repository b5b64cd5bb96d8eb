"""The Gluon wgmma GEMM (``awq_ao/kernels/int4_wgmma.py``) without a GPU.

Gluon kernels do not run under the interpreter, so the kernel itself is checked in four other ways (the
fourth, its source run on CPU tensors by ``tests/gluon_emulator.py``, is ``tests/test_gluon_emulated.py``):

* its index algebra: the unpacked weight tile and the staged activation tile, built here with the
  same joins, permutations and reshapes in PyTorch (which share Gluon's value semantics), must hold
  the weight and the activation in one and the same column order, so their product is ``x @ W.T``;
* its PTX (``tests/test_ptx_unpacking.py`` runs it on an emulator);
* its sm_90 compile (``tests/test_kernel_configs.py``): the unpacked tile converts to the MMA's register
  layout trivially (``assert_trivial``), and the main loop has no shared-memory traffic.

And its plumbing: configs, the fallback where it cannot run, and the op dispatch.
"""

import dataclasses

import pytest
import torch

from helpers import benchmark_module

from awq_ao import quant
from awq_ao.kernels import KernelConfig, int4_linear, int4_wgmma


def test_mma_column_order_is_the_documented_permutation():
    """MMA column 32q + 16 p1 + 8 p0 + 2c + b holds stored column 32c + 8q + 4b + 2 p1 + p0 (module docstring)."""
    order = int4_wgmma.mma_column_order()
    assert sorted(order.tolist()) == list(range(128))
    for q in range(4):
        for p in range(4):
            for c in range(4):
                for b in range(2):
                    assert order[32 * q + 8 * p + 2 * c + b] == 32 * c + 8 * q + 4 * b + p


def _join(a, b):
    """Gluon's ``join``: a new last axis of size 2."""
    return torch.stack([a, b], dim=-1)


def _unpacked_tile_as_the_kernel_builds_it(words, zero, scale):
    """words int32 [64, 16] (one 128-column tile), zero / scale [64, 4] (per row, per thread c's 32 columns)
    -> fp64 [64, 128] ``(q - z) * s``, assembled as ``_int4_wgmma_kernel`` assembles its A operand."""
    w = words.reshape(64, 4, 4).to(torch.int64) & 0xFFFFFFFF  # [n, c, q]
    z = zero[:, :, None].double()
    s = scale[:, :, None].double()

    def pair(p):  # _pair on words >> 4p: nibbles p (low half) and p + 4 (high half)
        return (((w >> (4 * p)) & 0xF) - z) * s, (((w >> (4 * p + 16)) & 0xF) - z) * s

    (l0, h0), (l1, h1), (l2, h2), (l3, h3) = (pair(p) for p in range(4))
    a = _join(_join(_join(l0, h0), _join(l1, h1)), _join(_join(l2, h2), _join(l3, h3)))
    return a.permute(int4_wgmma.A_TO_MMA).reshape(64, 128)


@pytest.mark.parametrize("group", [32, 64, 128])
def test_unpacked_weight_and_staged_activation_share_one_column_order(group):
    """The A operand is the dequantized tile in ``mma_column_order``; the staged activation (loaded as
    [m, c, q, b, p1, p0], permuted by X_TO_MMA) is x in that same order; so their product is x @ W.T."""
    gen = torch.Generator().manual_seed(group)
    q = torch.randint(0, 16, (64, 128), generator=gen, dtype=torch.uint8)
    zero = torch.randint(0, 16, (64, 128 // group), generator=gen, dtype=torch.uint8)
    scale = torch.rand(64, 128 // group, generator=gen, dtype=torch.float64) + 0.5
    words = quant.pack_int4(q).view(torch.int32)  # the stored layout: column 8j+i in bits 4i..4i+3 of word j
    dense = quant.dequantize(q, scale, zero, group, 128, torch.float64)
    thread_group = torch.arange(4) * 32 // group  # thread c's 32 columns lie in one group
    a = _unpacked_tile_as_the_kernel_builds_it(words, zero[:, thread_group], scale[:, thread_group])
    order = int4_wgmma.mma_column_order()
    assert torch.equal(a, dense[:, order])

    x = torch.randn(16, 128, generator=gen, dtype=torch.float64)
    staged = x.reshape(16, 4, 4, 2, 2, 2).permute(int4_wgmma.X_TO_MMA).reshape(16, 128)
    assert torch.equal(staged, x[:, order])
    torch.testing.assert_close(staged @ a.T, x @ dense.T, rtol=1e-12, atol=1e-12)


def test_a_wrong_permutation_is_caught():
    """The check above is not vacuous: the activation's permutation used for the weight breaks the product."""
    gen = torch.Generator().manual_seed(1)
    q = torch.randint(0, 16, (64, 128), generator=gen, dtype=torch.uint8)
    words = quant.pack_int4(q).view(torch.int32)
    ones, zeros = torch.ones(64, 4, dtype=torch.float64), torch.zeros(64, 4, dtype=torch.uint8)
    saved = int4_wgmma.A_TO_MMA
    try:
        int4_wgmma.A_TO_MMA = int4_wgmma.X_TO_MMA
        a = _unpacked_tile_as_the_kernel_builds_it(words, zeros, ones)
    finally:
        int4_wgmma.A_TO_MMA = saved
    assert not torch.equal(a, q.double()[:, int4_wgmma.mma_column_order()])


def test_fitted_config_keeps_the_staged_activation_in_shared_memory():
    """BLOCK_M rounds up to an MMA width; the split grows until TILES * BLOCK_M * 256 bytes fit; a group that is
    not a multiple of 32 takes the swapped tl.dot GEMM tile."""
    cfg = KernelConfig("wgmma", 64, 128, block_m=3, split_k=1).fitted(128, 8192)  # 64 tiles of 128 columns
    assert (cfg.kind, cfg.block_m, cfg.block_n, cfg.block_k, cfg.num_warps) == ("wgmma", 8, 64, 128, 4)
    assert cfg.split_k == 2  # 32 tiles x 8 rows x 256 bytes = 64 KB
    assert KernelConfig("wgmma", 64, 128, block_m=16, split_k=1).fitted(128, 8192).split_k == 4
    assert KernelConfig("wgmma", 64, 128, block_m=64, split_k=8).fitted(128, 14336).split_k == 28
    assert KernelConfig("wgmma", 64, 128, block_m=16, split_k=64).fitted(64, 256).split_k == 2  # at most the tiles
    assert KernelConfig("wgmma", 64, 128, block_m=16, split_k=4, fused_reduce=True).fitted(128, 8192).fused_reduce
    assert not KernelConfig("wgmma", 64, 128, block_m=8, split_k=1, fused_reduce=True).fitted(128, 512).fused_reduce
    ring = KernelConfig("wgmma", 64, 128, block_m=16, split_k=4, num_stages=4, prefetch=2).fitted(128, 8192)
    assert (ring.num_stages, ring.prefetch, ring.split_k) == (4, 1, 7)  # 10 tiles: 40 KB + ring 16 KB + scales
    assert int4_wgmma.shared_bytes(16, 10, 4) <= int4_wgmma.WGMMA_SMEM_BYTES < int4_wgmma.shared_bytes(16, 11, 4)
    wide = KernelConfig("wgmma", 128, 128, block_m=16, split_k=1, num_stages=4).fitted(128, 8192)
    assert (wide.block_n, wide.num_warps, wide.split_k) == (128, 8, 13)  # 5 tiles: 20 + 32 (ring) + 7.5 KB
    assert KernelConfig("wgmma", 256, 128, block_m=16).fitted(128, 1024).num_warps == 16  # 64, 128 or 256 rows
    assert KernelConfig("wgmma", 512, 128, block_m=16).fitted(128, 1024).block_n == 256
    assert KernelConfig("wgmma", 96, 128, block_m=16).fitted(128, 1024).block_n == 64
    fallback = KernelConfig("wgmma", 64, 128, block_m=8, split_k=4).fitted(16, 4096)
    assert (fallback.kind, fallback.swap_ab, fallback.block_m, fallback.block_k) == ("gemm", True, 16, 16)


@pytest.mark.parametrize("with_pre", [False, True])
def test_wgmma_config_falls_back_to_the_swapped_gemm_where_it_cannot_run(with_pre):
    """On a CPU (the interpreter), a wgmma config runs the swapped tl.dot GEMM with its split, correctly."""
    gen = torch.Generator().manual_seed(3)
    n, k, group = 96, 320, 32
    q, scale, zero = quant.quantize(torch.randn(n, k, generator=gen), 4, group, scale_dtype=torch.float16)
    x = torch.randn(5, k, generator=gen).to(torch.float16)
    pre = (torch.rand(k, generator=gen) + 0.5).to(torch.float16) if with_pre else None
    cfg = KernelConfig("wgmma", 64, 128, block_m=8, split_k=2)
    y = int4_linear(x, quant.pack_int4(q), scale, zero, group, k, act_pre_scale=pre, config=cfg)
    dense = quant.dequantize(q, scale, zero, group, k, torch.float64)
    xs = x.double() if pre is None else (x.float() * pre.float()).to(torch.float16).double()
    expected = xs @ dense.T
    assert ((y.double() - expected).norm() / expected.norm()).item() < 3e-3


def test_no_wgmma_candidates_without_an_sm90_gpu():
    from awq_ao.kernels.configs import candidate_configs

    assert not int4_wgmma.wgmma_available(torch.device("cpu"))
    assert all(c.kind != "wgmma" for m in (1, 16, 64) for c in candidate_configs(m, 4096, 4096, 128,
                                                                                 torch.device("cpu")))


def test_wgmma_op_is_registered_with_a_fake():
    """The opaque op the triton_op's body calls for wgmma configs: its fake gives [M, N] in x's dtype."""
    from torch._subclasses.fake_tensor import FakeTensorMode

    with FakeTensorMode():
        x = torch.empty(5, 256, dtype=torch.bfloat16)
        y = torch.ops.awq_ao.int4_linear_opaque(x, torch.empty(96, 128, dtype=torch.uint8),
                                              torch.empty(96, 2, dtype=torch.bfloat16),
                                              torch.empty(96, 2, dtype=torch.uint8), None, 128, 256)
    assert y.shape == (5, 96) and y.dtype == torch.bfloat16


def test_availability_follows_the_gpu_and_the_switch(monkeypatch):
    """An sm_90 device with Gluon takes the kernel; another capability, or AWQ_AO_DISABLE_WGMMA=1, does not."""
    cuda = torch.device("cuda", 0)
    monkeypatch.setattr(int4_wgmma, "HAVE_GLUON", True)
    monkeypatch.setattr(int4_wgmma, "capability_major", lambda index: 9)
    monkeypatch.delenv("AWQ_AO_DISABLE_WGMMA", raising=False)
    assert int4_wgmma.wgmma_available(cuda)
    monkeypatch.setenv("AWQ_AO_DISABLE_WGMMA", "1")
    assert not int4_wgmma.wgmma_available(cuda)
    monkeypatch.delenv("AWQ_AO_DISABLE_WGMMA")
    monkeypatch.setattr(int4_wgmma, "capability_major", lambda index: 8)
    assert not int4_wgmma.wgmma_available(cuda)


def test_wgmma_check_script_refuses_without_a_gpu(tmp_path, capsys):
    """benchmarks/wgmma_check.py (the kernel's first GPU run) stays importable and says what it needs."""
    module = benchmark_module("wgmma_check")
    assert module.main(["--out", str(tmp_path)]) == 2
    assert "sm_90" in capsys.readouterr().out
    assert module.main(["--dry-run", "--out", str(tmp_path)]) == 0  # its correctness half, on the CPU fallback
    out = capsys.readouterr().out
    assert (tmp_path / module.FAILED_FILE).read_text() == "\n"  # no variant failed: device_check turns none off
    mma = len(module.MMA_CHECKED)
    runs = {(pre, group): len(module.checked_variants(pre, group)) for pre in (True, False) for group in (128, 32)}
    assert runs == {(True, 128): len(module.CHECKED) + 2 + 2 * mma, (False, 128): 2 * mma,
                    (True, 32): len(module.CHECKED) + 2 + mma, (False, 32): mma}  # late: groups of 128 only
    assert "b2o:" in out and " mma:" in out and " late:" in out
    # the dry run's cases: group 128 and group 32, fp16, with and without the pre-scale
    assert "dry run: 0 failed" in out and out.count("ok  ") == sum(runs.values())
    n_checks = sum(len(module.checked_variants(pre, group)) for pre in (True, False)
                   for _, _, _, group in module.CASES) * 2  # bf16 and fp16
    assert n_checks == 252  # the GPU check's size, which device_check.sh's WGMMA_S limit is set for


def test_traced_triton_op_sends_wgmma_configs_to_the_opaque_op(monkeypatch):
    """Where the selected config is the wgmma kernel, the triton_op's body, as Inductor traces it, calls
    awq_ao::int4_linear_opaque (so Inductor never sees a Gluon kernel), and that op launches it with the kept
    counters; run eagerly, the body launches it itself (directly, as the opaque op would). Here the GPU check
    and the launch itself are stand-ins; the stand-in launch runs the swapped GEMM the CPU can run."""
    from awq_ao.kernels import int4_matmul

    gen = torch.Generator().manual_seed(5)
    n, k, group = 64, 256, 128
    q, scale, zero = quant.quantize(torch.randn(n, k, generator=gen), 4, group, scale_dtype=torch.float16)
    x = torch.randn(3, k, generator=gen).to(torch.float16)
    wgmma = KernelConfig("wgmma", 64, 128, block_m=8, split_k=2, fused_reduce=True).fitted(group, k)
    launched = []

    def stand_in(x, words, scale, zero_point, pre, has_pre, y, group_size, in_features, config, counters=None):
        launched.append((config, counters is not None))
        return int4_matmul.fused_linear(x, words, scale, zero_point, pre, has_pre, y, group_size, in_features,
                                        words.shape[0], words.shape[1] * 8, config.as_swapped_gemm(group_size, k),
                                        lambda kernel: kernel)

    monkeypatch.setattr(int4_wgmma, "wgmma_available", lambda device: True)
    monkeypatch.setattr(int4_wgmma, "wgmma_linear", stand_in)
    monkeypatch.setattr(int4_matmul, "select_config", lambda *args: wgmma)
    opaque = []
    real_opaque = torch.ops.awq_ao.int4_linear_opaque
    monkeypatch.setattr(torch.ops.awq_ao, "int4_linear_opaque", lambda *a: opaque.append(1) or real_opaque(*a))
    expected = x.double() @ quant.dequantize(q, scale, zero, group, k, torch.float64).T
    y = torch.ops.awq_ao.int4_linear_triton(x, quant.pack_int4(q), scale, zero, None, group, k)
    assert launched == [(wgmma, True)] and opaque == []
    assert ((y.double() - expected).norm() / expected.norm()).item() < 3e-3
    monkeypatch.setattr(torch.compiler, "is_compiling", lambda: True)  # the body as Inductor traces it
    y = torch.ops.awq_ao.int4_linear_triton(x, quant.pack_int4(q), scale, zero, None, group, k)
    assert launched == [(wgmma, True)] * 2 and opaque == [1]
    assert ((y.double() - expected).norm() / expected.norm()).item() < 3e-3


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_late_dequant_algebra_in_fp32(dtype):
    """``late_dequant``'s arithmetic, replayed in PyTorch on one 128-column tile (K order does not matter, so the
    MMA column order is left out): the MMA's fp32 product of the raw ``magic + q`` and the staged activation,
    then ``s * P - s * (magic + z) * sum(x)`` in fp32, against the exact ``x @ ((q - z) * s).T``. The large
    ``magic * sum(x)`` cancels, the more so with every activation positive: 1.1e-6 and 1.2e-6 relative in bf16
    (magic 128), 3.5e-5 and 3.7e-5 in fp16 (magic 1024), for N(0, 1) and all-positive activations, under each
    dtype's own rounding of a dequantized weight (2**-9 and 2**-12 relative). Printed with ``pytest -s``."""
    gen = torch.Generator().manual_seed(7)
    rows, m = 64, 16
    q = torch.randint(0, 16, (rows, 128), generator=gen)
    z = torch.randint(0, 16, (rows,), generator=gen)
    s = (torch.rand(rows, generator=gen) * 0.02 + 1e-3).to(dtype).double()
    magic = int4_wgmma.MAGIC_VALUE[dtype]
    for x in (torch.randn(m, 128, generator=gen), torch.rand(m, 128, generator=gen) + 0.5):
        x = x.to(dtype).double()  # as staged: the activation in the dtype (products exact in fp32)
        exact = x @ ((q - z[:, None]).double() * s[:, None]).T  # [m, rows]
        raw = (q.double() + magic).float()  # magic + q, exact in the dtype and in fp32
        part = (x.float() @ raw.T)  # the MMA: fp32 accumulation
        x_sum = x.float().sum(dim=1)  # staged column sums, fp32
        s32 = s.float()
        y = (s32[None, :] * part) - (s32 * (z.float() + magic))[None, :] * x_sum[:, None]
        err = ((y.double() - exact).norm() / exact.norm()).item()
        print(f"late_dequant fp32 arithmetic, {dtype}, {'N(0, 1)' if x.min() < 0 else 'positive'} x: {err:.2e}")
        assert err < (2e-5 if dtype == torch.bfloat16 else 2e-4), err


def test_late_dequant_is_fitted_only_where_a_tile_lies_in_one_group():
    """``late_dequant`` needs mma.sync and a group that is a multiple of the 128-column tile; elsewhere fitting
    drops it (the config runs mma.sync with the scale in the unpacking). Its staged column sums count in the
    shared memory that sets the split."""
    late = KernelConfig("wgmma", 64, 128, block_m=16, split_k=1, mma_sync=True, late_dequant=True)
    assert late.fitted(128, 8192).late_dequant and late.fitted(256, 8192).late_dequant
    assert not late.fitted(64, 8192).late_dequant and late.fitted(64, 8192).mma_sync
    assert not dataclasses.replace(late, mma_sync=False).fitted(128, 8192).late_dequant
    assert int4_wgmma.shared_bytes(16, 10, 0, 64, late=True) == int4_wgmma.shared_bytes(16, 10, 0, 64) + 10 * 16 * 4


def test_variants_that_failed_their_check_stay_out_of_the_tuning(monkeypatch):
    """``AWQ_AO_GLUON_OFF`` (device_check.sh sets it from wgmma_check's list of failed variants) keeps those
    variants out of the tuner's candidates and of wgmma_check's timing; the others stay."""
    from awq_ao.kernels import configs

    monkeypatch.setattr(int4_wgmma, "wgmma_available", lambda device: True)

    def gluon():
        return [c for c in configs.candidate_configs(8, 8192, 8192, 128, torch.device("cpu")) if c.kind == "wgmma"]

    everything = gluon()
    assert any(c.late_dequant for c in everything) and any(c.mma_sync and not c.late_dequant for c in everything)
    monkeypatch.setenv("AWQ_AO_GLUON_OFF", "late")
    assert configs.gluon_variants_off() == {"late"}
    kept = gluon()
    assert not any(c.late_dequant for c in kept) and any(c.mma_sync for c in kept) and len(kept) < len(everything)
    monkeypatch.setenv("AWQ_AO_GLUON_OFF", "mma,late")
    assert all(not c.mma_sync for c in gluon()) and gluon()
    module = benchmark_module("wgmma_check")
    assert {v for _, v in module.timed_variants(module.TIMED_SHORT)} == {"wgmma", "overlap"}
