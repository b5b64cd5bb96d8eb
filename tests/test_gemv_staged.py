"""The staged M = 1 GEMV (``kernels/int4_gemv_staged.py``, Gluon): its logic on CPU through
``tests/gluon_emulator.py`` and ``int4_linear`` as a GPU would launch it, against a float64 reference (every
group it takes, the pre-scale, splits, prefetch, its tiles, several activation rows); the shapes it does not
take run the Triton GEMV with the same tile; its configs; and its sm_90 SASS (registers, instructions per
weight against the Triton GEMV's)."""

import pytest
import torch
from gluon_emulator import staged_gemv_kernel
from helpers import KernelRecorder, compiled_in_child, quantized_case

from awq_ao.kernels import KernelConfig, configs, int4_gemv_staged, int4_linear, int4_wgmma

TOL = {torch.bfloat16: 1e-2, torch.float16: 3e-3, torch.float32: 1e-4}


@pytest.fixture
def emulated(monkeypatch):
    """Staged configs launch the emulated kernel on CPU tensors (as on an sm_90 GPU with Gluon)."""
    monkeypatch.setattr(int4_wgmma, "wgmma_available", lambda device: True)
    monkeypatch.setattr(int4_gemv_staged, "_int4_gemv_staged_kernel", staged_gemv_kernel())


def _relative_error(cfg, dtype, m, n, k, group, with_pre, seed=0):
    """``int4_linear`` with ``cfg`` on a random case against the float64 reference; (error, fitted config)."""
    x, qdata, scale, zero, pre, expected = quantized_case(dtype, m, n, k, group, with_pre, seed)
    y = int4_linear(x, qdata, scale, zero, group, k, act_pre_scale=pre, config=cfg)
    return ((y.double() - expected).norm() / expected.norm()).item(), cfg.fitted(group, qdata.shape[1] * 2)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, torch.float32])
def test_staged_gemv_matches_the_reference(emulated, dtype):
    """Groups 32, 64, 128 and 256 (a chunk of 32 columns in one group; 1 to 8 groups per 256-column tile), with
    and without the pre-scale, splits 1 to 3 (each a divisor of the tiles), with and without the weight
    prefetch, 2 and 4 warps; the emulated kernel ran each time."""
    kernel = int4_gemv_staged._int4_gemv_staged_kernel
    cases = ((64, 512, 32, 1, 64, 2, 0), (128, 1024, 64, 2, 64, 2, 1), (128, 768, 128, 3, 128, 4, 0),
             (64, 512, 256, 2, 64, 4, 1))
    for n, k, group, split, block_n, warps, prefetch in cases:
        cfg = KernelConfig("staged", block_n, 256, split_k=split, num_warps=warps, prefetch=prefetch)
        for with_pre in (False, True):
            before = kernel.programs
            err, fitted = _relative_error(cfg, dtype, 1, n, k, group, with_pre)
            assert fitted.kind == "staged" and fitted.split_k == split
            assert kernel.programs - before == n // block_n * split  # the grid: row blocks x splits
            assert err < TOL[dtype], (n, k, group, split, with_pre, err)


@pytest.mark.parametrize("rows", [1, 2])
def test_several_activation_rows(emulated, rows):
    """Three activation rows: the grid's third axis, one or two rows per program (two: each unpacked weight feeds
    both rows' FFMAs; the second program's second row is past M, read as row M - 1 and not stored), each right,
    in bf16 and fp16, one split and two."""
    kernel = int4_gemv_staged._int4_gemv_staged_kernel
    for dtype, split in ((torch.bfloat16, 2), (torch.float16, 1)):
        cfg = KernelConfig("staged", 64, 256, split_k=split, block_m=rows, num_warps=2)
        before = kernel.programs
        err, fitted = _relative_error(cfg, dtype, 3, 128, 512, 128, True, seed=1)
        assert fitted.block_m == rows and err < TOL[dtype], (dtype, err)
        assert kernel.programs - before == 2 * split * (3 if rows == 1 else 2)


def test_shapes_it_does_not_take_run_the_triton_gemv(emulated):
    """N not a multiple of the tile (100 rows), K_pad not a multiple of 256 (K = 300: 384), groups of 16, and
    K < K_pad (K = 500, group 256: K_pad 512): the Triton GEMV with the same tile runs instead (the emulated
    kernel does not), and is right."""
    kernel = int4_gemv_staged._int4_gemv_staged_kernel
    cfg = KernelConfig("staged", 64, 256, split_k=2, num_warps=2)
    for n, k, group in ((100, 512, 128), (64, 300, 128), (64, 512, 16), (64, 500, 256)):
        before = kernel.programs
        err, _ = _relative_error(cfg, torch.float16, 1, n, k, group, True, seed=2)
        assert kernel.programs == before and err < TOL[torch.float16], (n, k, group, err)


def test_staged_configs_fit_the_shape():
    """fitted(): the split comes down to a divisor of the 256-column tiles (14336 columns: 56 tiles, split 16 ->
    14), or up to the smallest whose staged activation fits in SMEM_BYTES (65536 columns), BLOCK_N to a
    multiple of 4 rows per warp, prefetch to 0 or 1; groups of 16 and K_pad not a multiple of 256 give the
    Triton GEMV with the same tile (as_gemv)."""
    cfg = KernelConfig("staged", 64, 256, split_k=16, num_warps=4, prefetch=2).fitted(128, 14336)
    assert (cfg.kind, cfg.split_k, cfg.block_n, cfg.prefetch, cfg.block_m) == ("staged", 14, 64, 1, 1)
    assert KernelConfig("staged", 40, 256, num_warps=4).fitted(128, 4096).block_n == 32
    assert KernelConfig("staged", 64, 256, split_k=4, num_warps=2).fitted(16, 4096).kind == "gemv"
    big = KernelConfig("staged", 64, 256, split_k=1, num_warps=2).fitted(128, 65536)  # 256 tiles: 264 KB at split 1
    assert big.split_k == 8 and int4_gemv_staged.shared_bytes(256 // 8) <= int4_gemv_staged.SMEM_BYTES
    two = KernelConfig("staged", 64, 256, split_k=1, block_m=4, num_warps=2).fitted(128, 65536)
    assert two.block_m == 2 and two.split_k == 16  # two rows stage twice the activation
    assert int4_gemv_staged.shared_bytes(256 // 4) > int4_gemv_staged.SMEM_BYTES
    fallback = KernelConfig("staged", 64, 256, split_k=4, block_m=2, num_warps=2).fitted(128, 384)
    assert fallback.kind == "gemv" and fallback.block_n == 64 and fallback.num_warps == 2 and fallback.block_m == 2


def test_staged_candidates_only_where_the_gluon_kernels_run(monkeypatch):
    """At M = 1 on an sm_90 GPU with Gluon (wgmma_available) the tuner tries the staged tiles, each fitted (its
    split divides the tiles), at M = 2 the two-row ones; not at M = 4, not without Gluon / sm_90, not once
    gpu_check turned them off."""
    cpu = torch.device("cpu")
    assert not any(c.kind == "staged" for c in configs.candidate_configs(1, 4096, 4096, 128, cpu))
    monkeypatch.setattr(int4_wgmma, "wgmma_available", lambda device: True)
    staged = [c for c in configs.candidate_configs(1, 4096, 14336, 128, cpu) if c.kind == "staged"]
    assert {(c.block_n, c.num_warps, c.prefetch, c.max_registers) for c in staged} == set(configs.STAGED_TILES)
    assert all((14336 // 256) % c.split_k == 0 and c == c.fitted(128, 14336) for c in staged)
    two_rows = [c for c in configs.candidate_configs(2, 4096, 4096, 128, cpu) if c.kind == "staged"]
    assert {(c.block_n, c.num_warps, c.block_m) for c in two_rows} == {(b, w, 2) for b, w in configs.STAGED_ROWS2_TILES}
    assert not any(c.kind == "staged" for c in configs.candidate_configs(4, 4096, 4096, 128, cpu))
    monkeypatch.setattr(configs, "STAGED_CANDIDATES", False)
    assert not any(c.kind == "staged" for m in (1, 2) for c in configs.candidate_configs(m, 4096, 4096, 128, cpu))


@pytest.mark.parametrize("dt", ["bf16", "fp16"])
def test_staged_gemv_compiles_to_sm90_with_fewer_instructions_than_the_triton_gemv(dt):
    """The staged GEMV (64 x 256 on 2 warps, 4 tiles per program) compiles for sm_90 with the Gluon in this
    Triton, with no spills, at most 128 registers (as many programs per SM as the Triton GEMV's 64 x 256
    tile) and under 3 instructions per weight in its main loop, fewer than that Triton GEMV's (2.83 against
    3.34 with Triton 3.6: the activation read from shared memory, a plane's 4 values per 16-byte load, and one scale
    step per 4 words); with two activation rows on 4 warps, at most 128 registers and at least 0.6 fewer
    instructions per weight than the 2-row Triton GEMV. Compiled in a child process: this one runs kernels
    under TRITON_INTERPRET."""
    pytest.importorskip("triton.experimental.gluon")
    code = (
        "staged = KernelConfig('staged', 64, 256, split_k=4, num_warps=2).fitted(128, 4096)\n"
        "gemv = KernelConfig('gemv', 64, 256, split_k=4, num_warps=2).fitted(128, 4096)\n"
        "staged2 = KernelConfig('staged', 64, 256, split_k=4, block_m=2, num_warps=4).fitted(128, 4096)\n"
        "gemv2 = KernelConfig('gemv', 64, 256, split_k=4, block_m=2, num_warps=2).fitted(128, 4096)\n"
        f"for cfg in (staged, gemv, staged2, gemv2): print(r.report(cfg, '{dt}', 128, 90, top=None))\n"
    )
    staged_row, gemv_row, staged2_row, gemv2_row = compiled_in_child(code, 4)
    staged, gemv, staged2, gemv2 = ([c.strip() for c in row.split("|")]
                                    for row in (staged_row, gemv_row, staged2_row, gemv2_row))
    # two rows per program (4 warps): 4.04-4.07 against the 2-row Triton GEMV's 5.12, 96 registers against 248
    assert staged2[2] == "2" and int(staged2[8]) == 0 and int(staged2[7]) <= 128, staged2_row
    assert float(staged2[10]) < float(gemv2[10]) - 0.6, (staged2_row, gemv2_row)
    assert staged[1] == "staged" and int(staged[8]) == 0 and int(staged[7]) <= 128, staged_row
    assert int(staged[9]) == int4_gemv_staged.shared_bytes(4), staged_row  # the split's fitting rule counts right
    assert float(staged[10]) < 3.0 and float(staged[10]) < float(gemv[10]) - 0.3, (staged_row, gemv_row)
    assert "LDS" in staged[12] and "FFMA" in staged[12], staged_row



def test_staged_probe_grid_holds_distinct_staged_configs_that_fit():
    """benchmarks/staged_probe.py's grid (the staged GEMV beyond the tuner's candidates, for a GPU run): on the
    goal shapes at 132 SMs, every config is a fitted staged one the kernel takes (even splits, whole tiles), none
    twice, at M = 1 with one activation row per program and at M = 2 with two."""
    from unittest import mock

    from helpers import benchmark_module

    probe = benchmark_module("staged_probe")
    with mock.patch.object(configs, "sm_count", lambda index: 132):
        for m in (1, 2):
            for n, k in probe.GOAL_SHAPES:
                grid = probe.grid(m, n, k, torch.device("cuda", 0))
                assert len(grid) == len(set(grid)) >= 3 * (len(probe.GRID_M1) if m == 1 else len(probe.GRID_M2)) - 6
                for cfg in grid:
                    assert cfg.kind == "staged" and cfg.block_m == m and cfg == cfg.fitted(128, k)
                    assert int4_gemv_staged.fits(n, k, 128, cfg.block_n, cfg.split_k), cfg


def test_register_cap_reaches_the_launch_and_keeps_the_result(emulated):
    """A staged config's ``max_registers`` is passed to the launch as Triton's ``maxnreg`` (none without a cap) and
    changes nothing in what the kernel computes; the Triton GEMV that runs the shapes the staged kernel does not
    take gets no cap; a cap below MIN_REGISTER_CAP or over 255 is refused by name."""
    kernel = int4_gemv_staged._int4_gemv_staged_kernel
    results = {}
    for cap in (0, 64):
        cfg = KernelConfig("staged", 64, 256, split_k=2, num_warps=4, max_registers=cap)
        err, fitted = _relative_error(cfg, torch.bfloat16, 1, 128, 512, 128, True, seed=3)
        assert fitted.max_registers == cap and err < TOL[torch.bfloat16], (cap, err)
        assert kernel.options[-1] == {"num_warps": 4, "maxnreg": cap or None}
        x, qdata, scale, zero, pre, _ = quantized_case(torch.bfloat16, 1, 128, 512, 128, True, 3)
        results[cap] = int4_linear(x, qdata, scale, zero, 128, 512, act_pre_scale=pre, config=cfg)
    assert torch.equal(results[0], results[64])
    assert KernelConfig("staged", 64, 256, max_registers=64).fitted(16, 4096).max_registers == 0  # as_gemv
    assert KernelConfig("gemv", 64, 256, max_registers=64).fitted(128, 4096).max_registers == 0
    for bad in (8, 300):
        with pytest.raises(ValueError, match="max_registers"):
            KernelConfig("staged", 64, 256, max_registers=bad).fitted(128, 4096)


def test_register_capped_tiles_compile_without_spills():
    """Every register-capped staged tile the tuner tries compiles for sm_90 in this Triton within its cap, with no
    spills and no more than 0.03 instructions per weight above the same tile uncapped (64 x 256 on 4 warps at 64:
    72 registers uncapped, 2.84 instructions per weight either way with Triton 3.6 and 3.9: 8 programs per SM
    instead of 7). Compiled in a child process: this one runs kernels under TRITON_INTERPRET."""
    pytest.importorskip("triton.experimental.gluon")
    capped = [t for t in configs.STAGED_TILES if t[3]]
    assert capped
    code = "".join(
        f"capped = KernelConfig('staged', {b}, 256, split_k=4, num_warps={w}, prefetch={p}, max_registers={cap})"
        f".fitted(128, 4096)\n"
        "import dataclasses\n"
        "for cfg in (capped, dataclasses.replace(capped, max_registers=0)): print(r.report(cfg, 'bf16', 128, 90))\n"
        for b, w, p, cap in capped)
    rows = [[c.strip() for c in row.split("|")] for row in compiled_in_child(code, 2 * len(capped))]
    for (b, w, p, cap), capped_row, free_row in zip(capped, rows[0::2], rows[1::2]):
        assert capped_row[1] == f"staged{' prefetch' if p else ''} cap {cap}", capped_row
        assert int(capped_row[7]) <= cap and int(capped_row[8]) == 0, capped_row  # registers, stack
        assert float(capped_row[10]) <= float(free_row[10]) + 0.03, (capped_row, free_row)


def test_l2_prefetch_asks_for_each_line_of_the_split_once(emulated, monkeypatch):
    """With ``l2_prefetch`` and a launch that runs PTX (``ptx.runs_ptx``, a CUDA tensor's; CPU tensors here, as
    on a GPU), each program asks L2 for the first tiles of its own rows and split before anything else: over
    the grid, the start of every 128-byte line of the weight's words exactly once (asking for more tiles than a
    split has asks for its own only), and the output is the same as without."""
    import gluon_emulator

    from awq_ao.kernels import ptx

    monkeypatch.setattr(ptx, "runs_ptx", lambda x: True)
    x, qdata, scale, zero, pre, _ = quantized_case(torch.bfloat16, 1, 128, 1024, 128, True, 4)
    words_per_row = 1024 // 8
    outs = {}
    for l2 in (0, 32):
        gluon_emulator.PREFETCHED.clear()
        cfg = KernelConfig("staged", 64, 256, split_k=2, num_warps=2, l2_prefetch=l2)
        outs[l2] = int4_linear(x, qdata, scale, zero, 128, 1024, act_pre_scale=pre, config=cfg)
        asked = [offsets for base, offsets in gluon_emulator.PREFETCHED]
        if l2 == 0:
            assert asked == []
            continue
        lines = torch.cat(asked).sort().values
        expected = torch.tensor([n * words_per_row + 32 * j for n in range(128) for j in range(words_per_row // 32)])
        assert torch.equal(lines, expected.sort().values)
        assert all(base.data_ptr() == qdata.data_ptr() for base, _ in gluon_emulator.PREFETCHED)
    assert torch.equal(outs[0], outs[32])


def test_gemv_launch_passes_l2_tiles_only_where_ptx_runs(monkeypatch):
    """The Triton GEMV's launch passes its config's ``l2_prefetch`` as L2_TILES when the launch runs PTX and 0
    under the interpreter (which has no inline assembly), and the GEMM's USE_ASM follows the same test."""
    from awq_ao.kernels import int4_matmul, ptx

    seen = []

    def recording(kernel):  # the launch wrapper: each kernel launched becomes a recorder
        return KernelRecorder(kernel, seen)

    x, qdata, scale, zero, pre, _ = quantized_case(torch.float16, 1, 128, 1024, 128, False, 5)
    words = qdata.view(torch.int32)
    cfg = KernelConfig("gemv", 64, 256, split_k=2, num_warps=2, l2_prefetch=3).fitted(128, 1024)
    for runs, expected in ((False, 0), (True, 3)):
        monkeypatch.setattr(ptx, "runs_ptx", lambda t, runs=runs: runs)
        seen.clear()
        int4_matmul.fused_linear(x, words, scale, zero, pre, False, None, 128, 1024, 128, 1024, cfg, recording)
        gemv = [kw for kernel, kw in seen if kernel is int4_matmul._int4_gemv_kernel]
        assert len(gemv) == 1 and gemv[0]["L2_TILES"] == expected, gemv
        gemm = KernelConfig("gemm", 64, 128, block_m=16, num_stages=3, swap_ab=True).fitted(128, 1024)
        seen.clear()
        int4_matmul.fused_linear(x, words, scale, zero, pre, False, None, 128, 1024, 128, 1024, gemm, recording)
        assert [kw["USE_ASM"] for kernel, kw in seen if kernel is int4_matmul._int4_gemm_kernel] == [runs]
