"""The Gluon GEMM (``kernels/int4_wgmma.py``) run on CPU by ``tests/gluon_emulator.py``: every variant (wgmma,
the two-buffer overlap, mma.sync, late_dequant) through ``int4_linear`` as a GPU would launch it, against a
float64 reference, with tails in M, N and K, the pre-scale, splits with the reduce launch and with the
in-kernel sum, one and two register buffers and the shared-memory ring. The emulator runs the kernel's own
source (only ``gl`` and the MMAs are stand-ins), so these are tests of its logic; the hardware's side is the
SASS tests' and the GPU check's."""

import dataclasses

import pytest
import torch
from gluon_emulator import wgmma_kernel
from helpers import quantized_case

from awq_ao.kernels import KernelConfig, int4_linear, int4_wgmma

TOL = {torch.bfloat16: 1e-2, torch.float16: 3e-3}
VARIANTS = {"wgmma": {}, "overlap": {}, "mma": {"mma_sync": True}, "late": {"mma_sync": True, "late_dequant": True}}
# (rows per program, split, fused sum, weight buffers, ring stages)
SPECS = ((64, 1, False, 1, 1), (64, 2, True, 2, 1), (64, 2, False, 1, 3), (128, 3, True, 1, 1), (256, 2, False, 1, 1))


@pytest.fixture
def emulated(monkeypatch):
    """Gluon configs launch the emulated kernel on CPU tensors."""
    monkeypatch.setattr(int4_wgmma, "wgmma_available", lambda device: True)
    monkeypatch.setattr(int4_wgmma, "_int4_wgmma_kernel", wgmma_kernel())


def _run(variant, spec, dtype, m, n, k, group, with_pre, seed=0):
    block_n, split, fused, buffers, stages = spec
    cfg = KernelConfig("wgmma", block_n, 128, block_m=m, split_k=split, fused_reduce=fused, prefetch=buffers,
                       num_stages=stages, **VARIANTS[variant])
    x, qdata, scale, zero, pre, expected = quantized_case(dtype, m, n, k, group, with_pre, seed)
    saved, before = int4_wgmma.OVERLAP_PAIRS, int4_wgmma._int4_wgmma_kernel.programs
    int4_wgmma.OVERLAP_PAIRS = variant == "overlap"
    try:
        y = int4_linear(x, qdata, scale, zero, group, k, act_pre_scale=pre, config=cfg)
    finally:
        int4_wgmma.OVERLAP_PAIRS = saved
    assert int4_wgmma._int4_wgmma_kernel.programs > before  # the emulated Gluon kernel ran, not a fallback
    return ((y.double() - expected).norm() / expected.norm()).item(), cfg.fitted(group, qdata.shape[1] * 2)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("variant", list(VARIANTS))
def test_every_variant_matches_the_reference(emulated, variant, dtype):
    """5 rows (BLOCK_M 8), 100 weight rows (a tail in N), K = 300 (K_pad 384: three 128-column tiles, the last
    one partly past K), group 128, each spec with and without the pre-scale; the fitted config keeps the
    variant (late_dequant: a group of 128 allows it)."""
    for spec in SPECS:
        if variant == "overlap" and spec[3] != 2:
            continue
        for with_pre in (False, True):
            err, fitted = _run(variant, spec, dtype, 5, 100, 300, 128, with_pre)
            assert fitted.kind == "wgmma" and fitted.mma_sync == (variant in ("mma", "late"))
            assert fitted.late_dequant == (variant == "late")
            assert err < TOL[dtype], (variant, spec, with_pre, err)


@pytest.mark.parametrize("variant", ["wgmma", "mma", "late"])
def test_small_groups_and_wide_activations(emulated, variant):
    """Groups of 32 (a thread's 32 columns are one group; four groups per tile) and 64 (late_dequant falls back
    to mma.sync there), 16 and 40 activation rows (BLOCK_M 16 and 64: two and eight n8 tiles)."""
    for m, group in ((3, 32), (40, 64), (16, 128)):
        err, fitted = _run(variant, (64, 2, True, 1, 1), torch.float16, m, 72, 256, group, True, seed=1)
        assert fitted.kind == "wgmma" and err < TOL[torch.float16], (m, group, err)


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_even_shapes_load_without_masks(emulated, variant):
    """128 rows and K = 640 (5 tiles): split 5 and split 1 leave every program whole tiles (EVEN: no masks, the
    loads ahead past a program's range read its last tile again), split 2 does not; all agree with the
    reference. The EVEN flag of each launch shows both paths ran."""
    for split, buffers, even in ((5, 2, True), (1, 1, True), (2, 2, False)):
        err, _ = _run(variant, (64, split, True, buffers, 1), torch.bfloat16, 3, 128, 640, 128, True, seed=3)
        assert err < TOL[torch.bfloat16] and int4_wgmma._int4_wgmma_kernel.constexprs[-1]["EVEN"] == even, split


def test_masks_can_be_forced_for_timing(emulated, monkeypatch):
    """``int4_wgmma.FORCE_MASKED`` (``AWQ_AO_GLUON_MASKED=1``; wgmma_check.py times one config both ways) keeps
    the masked loads on a shape that needs none, with the same result."""
    monkeypatch.setattr(int4_wgmma, "FORCE_MASKED", True)
    err, _ = _run("late", (64, 5, True, 2, 1), torch.bfloat16, 3, 128, 640, 128, True, seed=3)
    assert err < TOL[torch.bfloat16] and int4_wgmma._int4_wgmma_kernel.constexprs[-1]["EVEN"] is False


@pytest.mark.parametrize("variant", ["wgmma", "late"])
def test_several_activation_blocks_with_the_fused_sum(emulated, variant):
    """70 rows: two programs along M (BLOCK_M 64), each output tile with its own split counter."""
    err, fitted = _run(variant, (64, 3, True, 2, 1), torch.bfloat16, 70, 72, 384, 128, True, seed=2)
    assert fitted.block_m == 64 and fitted.fused_reduce and err < TOL[torch.bfloat16], err


def test_the_emulated_kernel_catches_a_wrong_magic(emulated, monkeypatch):
    """Not vacuous: late_dequant with the magic's value off by one (what the kernel subtracts per tile) is far
    off, as is wgmma with the zero term's constant off by one."""
    monkeypatch.setattr(int4_wgmma, "MAGIC_VALUE", {torch.bfloat16: 129.0, torch.float16: 1025.0})
    err, _ = _run("late", SPECS[0], torch.float16, 5, 100, 300, 128, False)
    assert err > 0.05, err
    monkeypatch.setattr(int4_wgmma, "NEG_MAGIC_PAIR", {d: v + 0x10001 for d, v in int4_wgmma.NEG_MAGIC_PAIR.items()})
    err, _ = _run("wgmma", SPECS[0], torch.float16, 5, 100, 300, 128, False)
    assert err > 0.05, err


def test_fused_sum_leaves_the_counters_at_zero(emulated):
    """The in-kernel split sum's protocol as the emulator runs it (programs in order): the last program of each
    tile adds the partials and sets its counter back to 0, for the next call."""
    x, qdata, scale, zero, _, expected = quantized_case(torch.bfloat16, 5, 100, 300, 128, False)
    counters = torch.zeros(8, dtype=torch.int32)
    cfg = dataclasses.replace(KernelConfig("wgmma", 64, 128, block_m=5, split_k=3, fused_reduce=True),
                              mma_sync=True)
    from awq_ao.kernels.int4_matmul import launch_int4_linear

    for _ in range(2):
        y = launch_int4_linear(x, qdata, scale, zero, None, None, 128, 300, config=cfg, counters=counters)
        assert ((y.double() - expected).norm() / expected.norm()).item() < TOL[torch.bfloat16]
        assert int(counters.abs().sum()) == 0


def test_l2_prefetch_asks_for_each_programs_own_tiles(emulated, monkeypatch):
    """With ``l2_prefetch`` and a launch that runs PTX (``ptx.runs_ptx``; CPU tensors here, as on a GPU) each
    program first asks L2 for its split's first tiles of its own rows (the word at each 128-column tile's start),
    none past N (100 of 64-row tiles) or K (K_pad 384: 3 tiles, split 2: tiles 0-1 and 2), once per M block (2
    of BLOCK_M 8 for 10 rows); the output is the same as without."""
    import gluon_emulator

    from awq_ao.kernels import ptx

    monkeypatch.setattr(ptx, "runs_ptx", lambda x: True)
    x, qdata, scale, zero, pre, _ = quantized_case(torch.bfloat16, 10, 100, 300, 128, True, 8)
    outs = {}
    for l2 in (0, 32):
        gluon_emulator.PREFETCHED.clear()
        cfg = KernelConfig("wgmma", 64, 128, block_m=8, split_k=2, mma_sync=True, prefetch=2, l2_prefetch=l2)
        outs[l2] = int4_linear(x, qdata, scale, zero, 128, 300, act_pre_scale=pre, config=cfg)
        asked = sorted(torch.cat([o for _, o in gluon_emulator.PREFETCHED]).tolist()) if l2 else []
        words_per_row = 384 // 8
        expected = sorted(n * words_per_row + 16 * t for n in range(100) for t in range(3) for _ in range(2)) if l2 \
            else []
        assert asked == expected, l2
    assert torch.equal(outs[0], outs[32])
