"""Launch-config selection, the tuned tables and their refusals (pure Python: no GPU needed)."""

import dataclasses
import json

import pytest
import torch

from helpers import benchmark_module, compiled_in_child

from awq_ao.kernels import KernelConfig, configs

CPU = torch.device("cpu")


def test_m_bucket():
    assert [configs.m_bucket(m) for m in (1, 2, 3, 5, 16, 17, 100, 512, 4096)] == [1, 2, 4, 8, 16, 32, 128, 512, 512]


def test_fitted_keeps_tiles_inside_a_group_and_split_inside_k():
    cfg = KernelConfig("gemm", block_n=64, block_k=128, split_k=64, block_m=16).fitted(group_size=32, k_pad=96)
    assert cfg.block_k == 32 and cfg.split_k == 3
    # tl.dot needs K >= 16: groups of 8 go to the GEMV
    assert KernelConfig("gemm", 64, 128, block_m=16).fitted(8, 64).kind == "gemv"


@pytest.mark.parametrize("m,kind,rows", [(1, "gemv", 1), (2, "gemv", 2), (4, "gemm", 16), (8, "gemm", 16),
                                         (16, "gemm", 16), (64, "gemm", 64), (128, "dequant", 1), (512, "dequant", 1)])
def test_default_config_kind_by_m(m, kind, rows):
    cfg = configs.default_config(m, 4096, 4096, 128, CPU)
    assert cfg.kind == kind and cfg.block_m == rows
    if kind == "gemm":  # inside one group
        assert cfg.block_k <= 128 and 128 % cfg.block_k == 0
    if kind == "gemv":  # whole groups per tile
        assert cfg.block_k % 128 == 0


def test_gemv_tiles_may_span_whole_groups_that_divide_k():
    assert KernelConfig("gemv", 64, 256).fitted(64, 4096).block_k == 256  # 4 groups per tile
    assert KernelConfig("gemv", 64, 256).fitted(64, 4224).block_k == 128  # 4224 = 33 x 128: 2 groups
    assert KernelConfig("gemv", 64, 256).fitted(64, 4160).block_k == 64  # 65 groups: one per tile
    assert KernelConfig("gemv", 64, 32).fitted(64, 4096).block_k == 32  # inside a group, as asked
    assert KernelConfig("gemm", 64, 256, block_m=16).fitted(64, 4096).block_k == 64  # the GEMM stays in a group


@pytest.mark.parametrize("group_size", [32, 64, 128])
@pytest.mark.parametrize("m", [1, 2, 4])
def test_default_tile_k_spans_groups_in_the_gemv_only(m, group_size):
    """The M = 1 and 2 GEMV reads 256 columns per tile whatever the group (smaller groups: whole groups per
    tile); the GEMM's tile stays inside one group."""
    cfg = configs.default_config(m, 4096, 4096, group_size, CPU)
    assert cfg.block_k == (256 if m <= 2 else min(128, group_size))
    if group_size < 128:  # K_pad = 4160 = 65 x 64: the largest tile of whole groups dividing it is 64 columns
        assert configs.default_config(1, 4096, 4160, group_size, CPU).block_k == 64


def test_prefetch_depth_is_fitted_to_the_kernel():
    assert KernelConfig("gemv", 64, 64, prefetch=2).fitted(64, 256).prefetch == 2
    assert KernelConfig("gemm", 64, 64, block_m=16, prefetch=2).fitted(64, 256).prefetch == 1
    assert KernelConfig("gemv", 64, 64, prefetch=True).fitted(64, 256).prefetch == 1  # older tables' JSON true
    assert KernelConfig("gemv", 64, 64, prefetch=1, num_stages=3).fitted(64, 256).prefetch == 0  # the ring loads ahead


def test_dequant_config_ignores_the_group_and_never_splits():
    cfg = KernelConfig("dequant", block_n=16, block_k=256, split_k=4)
    assert cfg.fitted(32, 4096) == KernelConfig("dequant", block_n=16, block_k=256)
    # a GEMM tile too thin for tl.dot falls back to the GEMV, with a row count the GEMV takes
    assert KernelConfig("gemm", 64, 128, block_m=16).fitted(8, 64).block_m in configs.GEMV_ROWS


def test_default_gemv_split_targets_programs_per_sm(monkeypatch):
    """One row: K split toward 6 two-warp programs per SM (the H200's fastest split on the goal shapes);
    two rows: toward 2 per SM. A pretend 132-SM GPU, no CUDA needed."""
    monkeypatch.setattr(configs, "sm_count", lambda index: 132)
    cuda = torch.device("cuda", 0)
    one = configs.default_config(1, 8192, 8192, 128, cuda)
    assert (one.block_n, one.block_k, one.num_warps, one.split_k) == (64, 256, 2, 8)  # 128 blocks x 8 >= 792
    assert configs.default_config(1, 4096, 14336, 128, cuda).split_k == 16  # capped at 16
    assert configs.default_config(2, 8192, 8192, 128, cuda).split_k == 4  # 128 x 4 >= 264


def test_default_config_splits_k_when_output_tiles_are_few():
    few = configs.default_config(1, 64, 4096, 128, CPU)  # one output tile
    assert few.split_k > 1
    assert configs.default_config(512, 4096, 4096, 128, CPU).split_k == 1


def test_candidates_are_fitted_unique_and_include_the_default():
    for m in (1, 2, 4, 8, 16, 32, 64, 128, 512):
        cands = configs.candidate_configs(m, 1000, 4224, 64, CPU)
        assert configs.default_config(m, 1000, 4224, 64, CPU) in cands
        assert len(cands) == len(set(cands))
        assert all(c == c.fitted(64, 4224) for c in cands)
        assert all(c.block_m in configs.GEMV_ROWS and c.block_m <= m for c in cands if c.kind == "gemv")
        assert any(c.kind == "dequant" for c in cands) == (m >= configs.DEQUANT_MIN_M)


def test_shipped_picks_stay_candidates(monkeypatch):
    """Every config a shipped tuned table picks (split aside, which follows the GPU's SM count) is still among the
    candidates for its shape, so pruning the candidate set never leaves a retune unable to pick it again. The
    candidates are an sm_90 card's (the shipped tables are H200 ones): the Gluon kernel's among them."""
    import os

    monkeypatch.setattr(configs, "_programs_target", lambda device, per_sm=2: per_sm * 132)
    monkeypatch.setattr(configs.int4_wgmma, "wgmma_available", lambda device: True)
    for name in sorted(os.listdir(configs.TUNED_DIR)):
        table = json.loads(open(os.path.join(configs.TUNED_DIR, name)).read())
        for row in table["configs"]:
            pick = KernelConfig(**{**row["config"], "split_k": 1})
            cands = configs.candidate_configs(row["m_bucket"], row["n"], row["k_pad"], row["group_size"], CPU)
            assert pick in {dataclasses.replace(c, split_k=1) for c in cands}, (name, row)


def test_tuned_table_round_trip(tmp_path, monkeypatch):
    monkeypatch.setattr(configs, "_TUNED", {})
    cfg = KernelConfig("gemv", 128, 128, split_k=4, prefetch=True)
    configs.record("Test GPU", 1, 4096, 4096, 128, cfg)
    swapped = KernelConfig("gemm", 128, 64, split_k=2, block_m=16, num_warps=8, num_stages=4, swap_ab=True,
                           fused_reduce=True, natural_order=True)
    configs.record("Test GPU", 16, 4096, 4096, 128, swapped)
    capped = KernelConfig("staged", 64, 256, split_k=8, num_warps=4, num_stages=1, max_registers=64)
    configs.record("Test GPU", 1, 8192, 8192, 128, capped)
    configs.record("Other GPU", 1, 4096, 4096, 128, KernelConfig("gemv", 64, 64))
    path = tmp_path / "tuned.json"
    configs.save_tuned(str(path), "Test GPU")
    table = json.loads(path.read_text())
    assert table["device"] == "Test GPU" and len(table["configs"]) == 3
    monkeypatch.setattr(configs, "_TUNED", {})
    assert configs.load_tuned(str(path)) == 3
    assert configs.tuned_config("Test GPU", 1, 4096, 4096, 128) == cfg
    assert configs.tuned_config("Test GPU", 1, 8192, 8192, 128).max_registers == 64  # the register cap kept
    assert configs.tuned_config("Test GPU", 9, 4096, 4096, 128) == swapped  # M 9..16 share a bucket
    assert configs.tuned_config("Test GPU", 2, 4096, 4096, 128) is None  # another M bucket
    assert configs.tuned_config("Other GPU", 1, 4096, 4096, 128) is None


def test_bundled_tables_load():
    """Every JSON in kernels/tuned/ is a valid table (they load at import)."""
    import os

    for name in os.listdir(configs.TUNED_DIR) if os.path.isdir(configs.TUNED_DIR) else []:
        if name.endswith(".json"):
            assert configs.load_tuned(os.path.join(configs.TUNED_DIR, name)) > 0


@pytest.mark.parametrize("content", [
    "not json",
    json.dumps({"device": "X"}),
    json.dumps({"device": "X", "configs": [{"m_bucket": 1, "n": 1, "k_pad": 8, "group_size": 8,
                                            "config": {"kind": "gemv", "block_n": 0, "block_k": 8}}]}),
    json.dumps({"device": "X", "configs": [{"m_bucket": 1, "n": 1, "k_pad": 8, "group_size": 8,
                                            "config": {"kind": "magic", "block_n": 8, "block_k": 8}}]}),
    json.dumps({"device": "X", "configs": [{"m_bucket": 8, "n": 1, "k_pad": 8, "group_size": 8,
                                            "config": {"kind": "gemv", "block_n": 8, "block_k": 8, "block_m": 8}}]}),
    json.dumps({"device": "X", "configs": [{"m_bucket": 1, "n": 1, "k_pad": 8, "group_size": 8,
                                            "config": {"kind": "gemv", "block_n": 8, "block_k": 8, "prefetch": 3}}]}),
    json.dumps({"device": "X", "configs": [{"m_bucket": 1, "n": 1, "k_pad": 256, "group_size": 128,
                                            "config": {"kind": "staged", "block_n": 64, "block_k": 256,
                                                       "max_registers": 8}}]}),
])
def test_bad_tuned_table_is_refused_by_name(tmp_path, monkeypatch, content):
    monkeypatch.setattr(configs, "_TUNED", {})
    path = tmp_path / "bad.json"
    path.write_text(content)
    with pytest.raises(ValueError, match="bad.json"):
        configs.load_tuned(str(path))
    assert configs._TUNED == {}


def test_tune_kernels_refuses_clearly_without_a_gpu_or_int4_weights():
    import awq_ao
    from awq_ao.tuning import int4_linear_shapes

    model = torch.nn.Sequential(torch.nn.Linear(64, 32))
    awq_ao.quantize_(model, awq_ao.awq_config(group_size=32))
    assert isinstance(model[0].weight, awq_ao.AWQInt4Tensor)
    assert int4_linear_shapes(model) == []  # on CPU: nothing for the CUDA kernels
    expected = "needs a CUDA GPU" if not torch.cuda.is_available() else "no AWQInt4Tensor weights on CUDA"
    with pytest.raises((RuntimeError, ValueError), match=expected):
        awq_ao.tune_kernels(model)


def test_bench_table_names_the_path_taken(monkeypatch):
    """benchmarks/bench_kernels.py labels each row with the kernel and tile select_config picked."""
    bench = benchmark_module("bench_kernels")
    assert bench.path_label(1, 4096, 4096, CPU).startswith("gemv 64x256")
    assert bench.path_label(2, 4096, 4096, CPU).startswith("gemv 64x256 r2")
    assert bench.path_label(16, 4096, 4096, CPU).startswith("gemm 64x128 m16 swap")
    assert bench.path_label(512, 4096, 4096, CPU) == "dequant 16x256"
    ring = KernelConfig("gemv", 64, 128, split_k=8, num_warps=1, num_stages=3, fused_reduce=True)
    monkeypatch.setattr(configs, "default_config", lambda *args: ring)  # as a tuned row would give it
    assert bench.path_label(1, 4096, 4096, CPU) == "gemv 64x128 w1 ring3 s8 fused"
    natural = KernelConfig("gemm", 64, 128, block_m=16, split_k=4, prefetch=1, swap_ab=True, fused_reduce=True,
                           natural_order=True)
    monkeypatch.setattr(configs, "default_config", lambda *args: natural)
    assert bench.path_label(16, 4096, 4096, CPU) == "gemm 64x128 m16 swap s4 fused pf natural"
    prefetching = KernelConfig("gemv", 64, 256, split_k=8, num_warps=2, l2_prefetch=32)
    monkeypatch.setattr(configs, "default_config", lambda *args: prefetching)
    assert bench.path_label(1, 4096, 4096, CPU) == "gemv 64x256 s8 l2 32"
    from awq_ao.kernels import int4_wgmma
    monkeypatch.setattr(int4_wgmma, "wgmma_available", lambda device: True)  # (the staged kind is sm_90's)
    capped = KernelConfig("staged", 64, 256, split_k=8, num_warps=4, max_registers=64)
    monkeypatch.setattr(configs, "default_config", lambda *args: capped)
    assert bench.path_label(1, 4096, 4096, CPU) == "staged 64x256 w4 s8 cap64"


def test_bench_table_times_each_column_on_its_own_calls():
    """benchmarks/bench_kernels.py: every column's calls run (this timer runs each list once and answers 1, 2,
    3 ... us in turn), the L2 column only where the weight fits in L2, the read floor once per shape where N and
    K are multiples of 128 (the faster of its splits), and each number lands in its column."""
    bench = benchmark_module("bench_kernels")
    lists = []

    def timer(calls):
        for call in calls:
            call()
        lists.append(len(calls))
        return 1e-3 * len(lists)

    r = bench.bench_shape(256, 1024, 1, l2_bytes=1 << 20, device="cpu", timer=timer)
    assert (r["awq_ao"], r["awq_ao_l2"], r["bf16"]) == (1e-3, 2e-3, 3e-3)
    assert lists[0] == lists[1] >= 2  # the same activations, rotated weight copies against one copy
    read = bench.int4_read_ms(256, 1024, 1 << 16, device="cpu", timer=timer)
    assert read == 1e-3 * (len(lists) - len(bench.READ_SPLITS) + 1)  # the faster (here: the first) split
    assert bench.int4_read_ms(576, 576, 1 << 16, device="cpu", timer=timer) is None
    row = bench.format_row("t", 256, 1024, 1, r, read, 1000.0, "gemv 64x256")
    assert row.startswith(f"| t | 256 x 1024 | 1 | 1.0 | 2.0 | {read * 1e3:.1f} | 3.0 | ")
    assert "| 3.00x |" in row and row.endswith("| gemv 64x256 |")
    lists.clear()
    big = bench.bench_shape(256, 1024, 1, l2_bytes=1 << 10, device="cpu", timer=timer)  # the weight outgrows L2
    assert "awq_ao_l2" not in big
    assert bench.format_row("t", 256, 1024, 1, big, None, 1000.0, "p").startswith("| t | 256 x 1024 | 1 | 1.0 | n/a | n/a |")


def test_compile_report_measures_load_to_use_around_the_loop():
    """benchmarks/compile_report.py's gap column: same-iteration use vs use after the back edge."""
    report = benchmark_module("compile_report")
    load = "LDG.E.U8 R5, desc[UR4][R2.64] ;"
    use = "LOP3.LUT R6, R5, 0xff, RZ, 0xc0, !PT ;"
    other = "IADD3 R1, R1, 0x1, RZ ;"
    assert report.shortest_load_use([load, other, other, use, other]) == 3  # waits in its own iteration
    assert report.shortest_load_use([use, other, other, load, other]) == 2  # used after the back edge
    assert report.shortest_load_use([other, use]) == -1  # no global load
    load7, use7 = "LDG.E.128 R7, desc[UR4][R2.64+0x10] ;", "FADD R8, R7, R1 ;"
    assert report.load_use_gaps([use7, load, other, use, load7]) == [  # each load's own gap, R7's after the edge
        ("LDG.E.U8", "R5", 2), ("LDG.E.128", "R7", 1)]


@pytest.mark.parametrize("natural", [False, True])
@pytest.mark.parametrize("dt, fma", [("bf16", "fma.rn.bf16x2"), ("fp16", "fma.rn.f16x2")])
def test_gemm_packed_unpacking_compiles_to_sm90_sass(dt, fma, natural):
    """The GEMM's PTX unpacking (two weights per LOP3 and packed FMAs; CUDA only, the interpreter runs the
    Triton-op twin) assembles for sm_90 with the ptxas in Triton's wheel; the MMA is asynchronous (the loop
    waits for it with tiles still pending, since the activation tile is the pipelined shared-memory copy and
    the accumulator is carried through ``tl.dot``), and the main loop of the default M = 16 tile costs under
    5.5 instructions per weight (the fp32 plane unpacking took 5.8; the wgmma descriptors add ~1). In column
    order (``natural_order``) each pair is one byte permute (PRMT, its selector folded in as an immediate) of the
    word and the word >> 4, for at most 0.3 instructions per weight more; the kernel passes the selectors the
    PTX emulator test checks.

    Compiled in a child process: this one runs kernels under TRITON_INTERPRET.
    """
    code = (
        f"cfg = KernelConfig('gemm', 64, 128, block_m=16, prefetch=1, swap_ab=True, natural_order={natural})\n"
        f"k = r.compile_config(cfg, '{dt}', 128, 90)\n"
        f"print('{fma}' in k.asm['ptx'], k.asm['ptx'].count('prmt.b32 t,'), "
        "all(re.search(rf'mov.b32 \\t%r\\d+, {sel};', k.asm['ptx']) for sel in (17408, 21777, 26146, 30515)))\n"
        "print(max(int(p) for p in re.findall(r'pendings = (\\d+)', k.asm['ttgir'])))\n"
        f"print(r.report(cfg, '{dt}', 128, 90))\n"
    )
    has_fma, pending, row = compiled_in_child(code, 3)
    # 64 x 128 weights: 1024 words, 4 pairs each, 128 threads; the selectors 0x4400, 0x5511, 0x6622, 0x7733 are the
    # ones tests/test_ptx_unpacking.py runs the byte-pair PTX with
    assert has_fma == f"True {32 if natural else 0} {natural}"
    assert int(pending) >= 1, "the loop waits for every MMA before the next tile"
    per_weight = float(row.split("|")[10])
    assert per_weight < (5.8 if natural else 5.5), row


@pytest.mark.parametrize("dt, block_n, block_m, buffers, stages", [
    ("bf16", 64, 16, 1, 1), ("fp16", 64, 8, 1, 1), ("bf16", 64, 16, 2, 1), ("bf16", 64, 16, 1, 4),
    ("bf16", 128, 16, 1, 1), ("bf16", 256, 16, 1, 1)])
def test_wgmma_kernel_compiles_to_sm90_without_a_shared_memory_round_trip(dt, block_n, block_m, buffers, stages):
    """The Gluon wgmma kernel (``int4_wgmma.py``) compiles for sm_90 with the Gluon in this Triton: the
    unpacked tile converts to the MMA's register layout trivially (``assert_trivial``, else no compile at
    all), and its main loop issues HGMMA with no shared-memory store, load or barrier (the tl.dot GEMM's
    has 8, 8 and 9 per tile), no spills (at most 96 registers with one weight buffer, 128 with two), under 4
    instructions per weight (3.3-3.4 with Triton 3.6, 3.5-3.6 with 3.9; 5.2-5.5 for the tl.dot GEMM). The
    pre-scaled variant (fused into the activation's staging) compiles too.
    """
    pytest.importorskip("triton.experimental.gluon")
    code = (
        f"cfg = KernelConfig('wgmma', {block_n}, 128, block_m={block_m}, prefetch={buffers}, num_stages={stages})"
        ".fitted(128, 4096)\n"
        f"r.compile_wgmma(cfg, '{dt}', 128, 90, k=1000, pre=True)\n"
        f"print(len(r.wgmma_register_hazards(r.main_loop(r.cuobjdump(r.compile_wgmma(cfg, '{dt}', 128, 90))[1])))\n"
        f"      + len(r.wgmma_register_hazards(r.main_loop(r.cuobjdump(r.compile_wgmma(cfg, '{dt}', 128, 90, overlap=True))[1])))\n"
        f"      + len(r.wgmma_register_hazards(r.main_loop(r.cuobjdump(r.compile_wgmma(cfg, '{dt}', 128, 90, even=False))[1]))))\n"
        f"print(cfg.split_k); print(r.report(cfg, '{dt}', 128, 90, top=None))\n"
    )
    hazards, split, row = compiled_in_child(code, 3)
    assert int(hazards) == 0, "an in-flight wgmma's registers touched (A written, or the accumulator used)"
    cells = [c.strip() for c in row.split("|")]
    regs, stack, per_weight, ops = int(cells[7]), int(cells[8]), float(cells[10]), cells[12]
    # 32 tiles x 16 rows x 256 bytes would be 128 KB; the ring's 16 KB and staged scales take 4 splits
    assert int(split) == (4 if stages > 1 else 2 if block_m == 16 else 1)
    assert int(cells[5]) == block_n // 16, row  # warps: one warp group per 64 rows
    assert stack == 0 and regs <= (96 if buffers == 1 else 128), row
    assert per_weight < 4, row
    mix = dict(op.rsplit(" ", 1) for op in ops.split(", "))
    assert int(mix["HGMMA"]) == 8 * buffers, row  # 128 columns / k16 per tile in the loop body
    if stages == 1:  # words in registers: no shared-memory traffic in the loop at all (with two warp groups
        # Triton 3.9, which these tests run, adds one CTA barrier after each tile's MMA wait; 3.6 does not)
        assert not {"STS", "LDS", "LDSM"} & set(mix), row
        assert int(mix.get("BAR", 0)) <= (0 if block_n == 64 else 1), row
    else:  # words by cp.async through a ring, read back with LDS; the compiler's two barriers per tile remain
        assert int(mix["LDGSTS"]) == 2 and "LDG" not in mix and int(mix["BAR"]) <= 2 and "LDSM" not in mix, row


@pytest.mark.parametrize("dt, block_m, buffers, stages, late, block_n", [
    ("bf16", 8, 1, 1, False, 64), ("fp16", 16, 1, 1, False, 64), ("bf16", 16, 2, 1, False, 64),
    ("bf16", 16, 1, 4, False, 64), ("bf16", 16, 2, 1, True, 64), ("fp16", 8, 1, 4, True, 64),
    ("bf16", 16, 1, 1, False, 256)])
def test_mma_sync_variant_compiles_to_sm90_hmma_with_no_wait_for_the_mma(dt, block_m, buffers, stages, late,
                                                                         block_n):
    """The Gluon kernel with ``mma_sync`` (``int4_wgmma.py``): the same unpacked fragment (the trivial conversion
    to the A operand holds for mma.sync's layout too, else no compile), fed to HMMA.16816 (BLOCK_M / 8 per k16
    step: 8 x BLOCK_M / 8 per tile) with no wgmma and no warp-group wait in the main loop; the activation comes
    from shared memory by ``ldmatrix``, the weight words as they do for wgmma (registers, or the ring's LDS).
    No spills (but 16 bytes for the 256-row tile with Triton 3.9), at most 100 registers (49-80 with Triton 3.6
    and 3.9), under 3.5 instructions per weight (2.6-3.2).
    The pre-scaled variant compiles too, and the kernel compiles for sm_80; so does its 256-row tile (16 warps). With ``late_dequant`` no 16-bit
    arithmetic is left in the loop (the MMA takes the raw ``magic + q``), and at most 3 instructions per weight
    (2.05-2.98 with Triton 3.6 and 3.9)."""
    pytest.importorskip("triton.experimental.gluon")
    code = (
        f"cfg = KernelConfig('wgmma', {block_n}, 128, block_m={block_m}, prefetch={buffers}, num_stages={stages}, "
        f"mma_sync=True, late_dequant={late}).fitted(128, 4096)\n"
        f"r.compile_wgmma(cfg, '{dt}', 128, 90, k=1000, pre=True)\n"
        f"print(len(r.cuobjdump(r.compile_wgmma(cfg, '{dt}', 128, 80))[1]) > 0)\n"
        f"print(r.report(cfg, '{dt}', 128, 90, top=None))\n"
    )
    sm80, row = compiled_in_child(code, 2)
    assert sm80 == "True"
    cells = [c.strip() for c in row.split("|")]
    assert cells[1].startswith("mma.sync late" if late else "mma.sync") and ("late" in cells[1]) == late, row
    regs, stack, per_weight, ops = int(cells[7]), int(cells[8]), float(cells[10]), cells[12]
    # (the 256-row tile on 16 warps: 16 bytes of stack with Triton 3.9, none with the device's 3.6)
    assert stack <= (16 if block_n == 256 else 0) and regs <= 100, row
    assert per_weight < 3.5, row
    mix = dict(op.rsplit(" ", 1) for op in ops.split(", "))
    assert int(mix["HMMA"]) == 8 * (block_m // 8) * buffers, row
    assert not any(op.startswith(("HGMMA", "WARPGROUP")) for op in mix), row
    assert "STS" not in mix and int(mix.get("LDSM", 0)) >= 1, row  # B by ldmatrix (at BLOCK_M 8, maybe as LDS)
    if late:
        # (fp16 scales and zeros convert to fp32 by HADD2.F32: a few per row and tile, none per weight; 64+ without)
        assert sum(int(mix.get(op, 0)) for op in ("HADD2", "HMUL2", "HFMA2")) <= 4 and per_weight <= 3.0, row
    if stages == 1:
        assert "LDGSTS" not in mix and "LDG" in mix, row
    else:
        assert int(mix["LDGSTS"]) == 2 and "LDG" not in mix, row


def test_mma_sync_is_a_gluon_option_that_fitting_keeps_only_there(monkeypatch):
    """``mma_sync`` belongs to the Gluon (``wgmma`` kind) configs: fitting keeps it there, drops it for the other
    kinds and for the swapped-GEMM fallback (a group that is not a multiple of 32); the tuner tries it beside
    wgmma on sm_90 (one and two register buffers and the ring, each at three splits, and the same with
    ``late_dequant`` where the group allows it, below M = 16 only), never elsewhere."""
    assert KernelConfig("wgmma", 64, 128, block_m=16, mma_sync=True).fitted(128, 4096).mma_sync
    assert not KernelConfig("gemm", 64, 128, block_m=16, mma_sync=True).fitted(128, 4096).mma_sync
    assert not KernelConfig("gemv", 64, 256, mma_sync=True).fitted(128, 4096).mma_sync
    assert not KernelConfig("dequant", 16, 256, mma_sync=True).fitted(128, 4096).mma_sync
    fallback = KernelConfig("wgmma", 64, 128, block_m=16, mma_sync=True).fitted(16, 4096)
    assert fallback.kind == "gemm" and not fallback.mma_sync
    from awq_ao.kernels import int4_wgmma

    assert not any(c.mma_sync for c in configs.candidate_configs(16, 8192, 8192, 128, CPU))
    monkeypatch.setattr(int4_wgmma, "wgmma_available", lambda device: True)
    monkeypatch.setattr(configs, "_programs_target", lambda device, per_sm=2: per_sm * 132)
    for m in (1, 8, 16, 64):
        gluon = [c for c in configs.candidate_configs(m, 8192, 8192, 128, CPU) if c.kind == "wgmma"]
        with_l2 = [c for c in gluon if c.l2_prefetch]  # (the L2-prefetch pairs of GLUON_L2_TILES, counted apart)
        pairs = 2 * len(configs.GLUON_L2_TILES) * len(configs.L2_PREFETCH_TILES["wgmma"])
        assert len(with_l2) == pairs if m < 64 else 0 < len(with_l2) <= pairs, m  # (64: splits coincide, below)
        gluon = [c for c in gluon if not c.l2_prefetch]
        mma = [c for c in gluon if c.mma_sync]
        late = [c for c in mma if c.late_dequant]
        if m < 64:  # (at 64 the staged activation raises the small splits to one value: fewer distinct configs)
            assert len(mma) - len(late) == 9 and len(gluon) == 24 + len(late), (m, len(late))
        if m < 16:  # (the ring with late's column sums at M = 8 fits its smallest split up to the next: 8 of 9)
            assert len(late) in (8, 9), m
            assert {(c.prefetch, c.num_stages) for c in late} == {(1, 1), (2, 1), (1, 4)}
        else:  # late_dequant was 14-49% slower than the fastest candidate on every goal shape at M = 16 (run 11)
            assert not late, m
        assert all(c.block_n == 64 and c.fused_reduce == (c.split_k > 1) for c in mma)
    # with groups of 64 the late configs fit to plain mma.sync ones, which the candidates hold already
    assert not any(c.late_dequant for c in configs.candidate_configs(8, 8192, 8192, 64, CPU))
    assert not any(c.kind == "wgmma" for c in configs.candidate_configs(128, 8192, 8192, 128, CPU))


def test_compiled_linear_on_fake_cuda_tensors_traces_as_on_the_gpu():
    """What ``torch.compile(fullgraph=True)`` makes of a quantized Linear on a GPU, replayed on fake CUDA
    tensors by ``benchmarks/compile_replay.py`` (gpu_check's module check, an H200 as Triton's target, the kept
    split-K counters present; in a child process, since Triton's interpreter, which this one runs, would
    execute the kernels instead of tracing them). The static M = 1 graph has the GEMV and its reduce launch as
    kernel calls for Inductor (plain config), or one call of the opaque ``int4_linear_opaque`` (the in-kernel
    sum, which reads the kept counters when it runs; the Gluon kernels: the staged GEMV at M = 1); the graph traced for every M
    (dynamic shapes, from the second size) is one opaque call, which picks the kernels by each call's M. The
    H200's two compile failures reproduce here with the code they ran, under torch 2.13 and under the
    device's torch 2.11: commit 8d50725 (the real counters passed into the op, "Please convert all Tensors to
    FakeTensors") and 5d9c875 under 2.11 only (``IndexError('tuple index out of range')`` on a mutable
    optional argument)."""
    import os
    import subprocess
    import sys

    root = os.path.dirname(os.path.dirname(__file__))
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    run = subprocess.run([sys.executable, os.path.join("benchmarks", "compile_replay.py")], cwd=root, env=env,
                         capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    lines = run.stdout.strip().splitlines()
    # GEMV + reduce as kernels at M = 1, the opaque op for every M
    assert lines[0:2] == ["plain bfloat16 True [(2, 0), (0, 1)]", "plain float16 True [(2, 0), (0, 1)]"], lines
    assert lines[2:4] == ["fused bfloat16 True [(0, 1), (0, 1)]", "fused float16 True [(0, 1), (0, 1)]"], lines
    assert lines[4:6] == ["wgmma bfloat16 True [(0, 1), (0, 1)]", "wgmma float16 True [(0, 1), (0, 1)]"], lines


def test_wgmma_register_hazard_check_flags_a_rewritten_operand():
    """``compile_report.wgmma_register_hazards`` (which the compile test above runs on the kernel's SASS):
    a write to an HGMMA's A registers, or any use of its accumulator, after it is issued is a hazard
    unless a ``DEPBAR.LE gsb0, 0x0`` comes between, around the loop's back edge too; a wait that leaves a
    group in flight does not clear it. Triton 3.6's SASS of the kernel with one group left in flight (commit
    0ebf190) had 100-193 such writes per loop (a scratch count), and the H200 check's wrong products
    (benchmarks/results/wgmma_check_nvidia_h200_race.log)."""
    r = benchmark_module("compile_report")
    issue = ["WARPGROUP.ARRIVE ;", "HGMMA.64x16x16.F32.BF16 R24, R32, gdesc[UR12], R24, gsb0 ;"]
    write = "LOP3.LUT R34, R8, 0xf000f, R2, 0xea, !PT ;"
    assert r.wgmma_register_hazards(issue + ["WARPGROUP.DEPBAR.LE gsb0, 0x1 ;", write]) == [write]
    assert r.wgmma_register_hazards([write] + issue + ["WARPGROUP.DEPBAR.LE gsb0, 0x1 ;"]) == [write]  # back edge
    assert r.wgmma_register_hazards(issue + ["WARPGROUP.DEPBAR.LE gsb0, 0x0 ;", write]) == []
    assert r.wgmma_register_hazards(issue + ["@P3 LDG.E.128 R30, desc[UR10][R68.64+0x40] ;"]) != []  # R30..R33
    assert r.wgmma_register_hazards(issue + ["LDG.E.128 R36, desc[UR10][R68.64] ;", "STG.E [R32.64], R4 ;"]) == []
    # the accumulator (R24..R31: 64 x 16 fp32 over 128 threads) may not be read or written in flight either
    read_acc = "FADD R40, R31, R2 ;"
    assert r.wgmma_register_hazards(issue + [read_acc]) == [read_acc]
    assert r.wgmma_register_hazards(issue + ["WARPGROUP.DEPBAR.LE gsb0, 0x0 ;", read_acc]) == []


def test_wgmma_fused_split_sum_follows_the_counter_protocol():
    """With ``fused_reduce`` the wgmma kernel's epilogue is splitk.py's: a CTA barrier, then one thread's
    acquire-release GPU-scope atomic on the tile's counter, the partials read through L2 (``ld.global.cg``),
    the counter set back to 0; the main loop is unchanged."""
    pytest.importorskip("triton.experimental.gluon")
    code = (
        "cfg = KernelConfig('wgmma', 64, 128, block_m=16, split_k=4, fused_reduce=True).fitted(128, 4096)\n"
        "ptx = r.compile_wgmma(cfg, 'bf16', 128, 90).asm['ptx']\n"
        "i = ptx.index('atom.global.gpu.acq_rel.add')\n"
        "print('bar.sync' in ptx[ptx.rindex('st.global', 0, i):i], ptx.count('ld.global.cg'),"
        " 'atom.global.gpu.relaxed.exch' in ptx)\n"
    )
    (line,) = compiled_in_child(code, 1)
    barrier, cg_loads, reset = line.split()
    assert barrier == "True" and reset == "True", line
    assert int(cg_loads) == 4 * 8, line  # 4 splits x (64 x 16 outputs / 128 threads)


def test_bench_layout_reads_every_word_once_in_each_layout():
    """benchmarks/bench_layout.py (the next layout experiment): the tiled copy holds each tile as one
    contiguous block, and its read kernel sums every word exactly once in every layout (interpreter)."""
    bench = benchmark_module("bench_layout")
    words = torch.randint(-2**31, 2**31 - 1, (256, 64), dtype=torch.int32)
    tiled = bench.to_tiled(words)
    assert tiled.shape == (2, 4, 128, 16) and tiled.is_contiguous()
    assert torch.equal(tiled[1, 2], words[128:256, 32:48])
    expected = int(words.sum(dtype=torch.int64)) & 0xFFFFFFFF
    for layout, tile_k, src in (("row-major", 128, words), ("row-major", 256, words), ("tiled", 128, tiled)):
        got = int(bench.read_sum(src, layout, tile_k, split=2).sum(dtype=torch.int64)) & 0xFFFFFFFF
        assert got == expected, (layout, tile_k)
    # the library's GEMV and GEMM on tiled copies (TILED addressing) give int4_linear's results bit for bit
    from awq_ao.kernels import int4_linear

    scale = (torch.rand(256, 4) * 0.01 + 1e-3).to(torch.float16)
    zero = torch.randint(0, 16, (256, 4), dtype=torch.uint8)
    for cfg, m in ((KernelConfig("gemv", 128, 128, split_k=2), 1),
                   (KernelConfig("gemm", 64, 128, block_m=16, split_k=2, prefetch=1, swap_ab=True), 5)):
        x = torch.randn(m, 512, dtype=torch.float16)
        expected_y = int4_linear(x, words.view(torch.uint8), scale, zero, 128, 512, config=cfg)
        tiled_n = bench.to_tiled(words, cfg.block_n)
        assert torch.equal(bench.linear(x, tiled_n, scale, zero, 128, cfg, tiled=True), expected_y), cfg.kind
        assert torch.equal(bench.linear(x, words, scale, zero, 128, cfg, tiled=False), expected_y), cfg.kind


def test_fused_reduce_candidates_and_their_switch(monkeypatch):
    """The tuner tries the in-kernel split-K sum for the default GEMV (M = 1, 2) and the swapped GEMM tiles
    (M = 2 .. 64), only with a split, and not at all once gpu_check has seen that path fail."""
    monkeypatch.setattr(configs, "_programs_target", lambda device, per_sm=2: per_sm * 132)
    for m in (1, 2, 16, 64, 128):
        fused = [c for c in configs.candidate_configs(m, 8192, 8192, 128, CPU) if c.fused_reduce]
        assert bool(fused) == (m <= 64), m
        assert all(c.split_k > 1 for c in fused)
        assert any(c.kind == "gemv" for c in fused) == (m <= 2), m
        assert all(c.swap_ab for c in fused if c.kind == "gemm")
        assert any(c.kind == "gemm" for c in fused) == (2 <= m <= 64), m
    monkeypatch.setattr(configs, "FUSED_REDUCE_CANDIDATES", False)
    for m in (1, 2, 16):  # at M = 1 too: the H200 run of 2026-11-27 still tuned 57 fused GEMV rings after the switch
        assert not any(c.fused_reduce for c in configs.candidate_configs(m, 8192, 8192, 128, CPU)), m


def test_natural_order_candidates_and_fitting(monkeypatch):
    """Column-order unpacking (no activation launch) is a GEMM option only: the tuner tries it on the swapped
    64 x 128 tile with a split, plain and fused, from M = 2 to 64; fitting a GEMV or dequantize config drops it."""
    monkeypatch.setattr(configs, "_programs_target", lambda device, per_sm=2: per_sm * 132)
    for m in (1, 2, 16, 64, 128):
        natural = [c for c in configs.candidate_configs(m, 8192, 8192, 128, CPU) if c.natural_order]
        assert bool(natural) == (2 <= m <= 64), m
        assert all(c.kind == "gemm" and c.swap_ab and c.block_n == 64 and c.split_k > 1 for c in natural)
        if natural:
            assert any(c.fused_reduce for c in natural) and not all(c.fused_reduce for c in natural), m
    assert not KernelConfig("gemv", 64, 128, natural_order=True).fitted(128, 4096).natural_order
    assert not KernelConfig("dequant", 16, 256, natural_order=True).fitted(128, 4096).natural_order
    assert KernelConfig("gemm", 64, 128, block_m=16, natural_order=True).fitted(128, 4096).natural_order
    # a group of 8 sends a GEMM config to the GEMV, without the option
    assert not KernelConfig("gemm", 64, 128, block_m=16, natural_order=True).fitted(8, 4096).natural_order


def test_tuner_reference_and_error():
    """The tuner's check of each candidate: the dense fp32 product from the packed weight, and an error that is
    inf for a NaN output (a config that leaves outputs unwritten never wins)."""
    from awq_ao import quant

    gen = torch.Generator().manual_seed(0)
    q, s, z = quant.quantize(torch.randn(24, 100, generator=gen), 4, 32, scale_dtype=torch.float16)
    x = torch.randn(3, 100, generator=gen).to(torch.float16)
    expected = configs.dense_reference(x, quant.pack_int4(q), s, z, 32, 100)
    w = quant.dequantize(q, s, z, 32, 100, torch.float64)
    assert expected.dtype == torch.float32 and expected.shape == (3, 24)
    assert torch.allclose(expected.double(), x.double() @ w.t(), rtol=1e-5, atol=1e-5)
    assert configs.relative_error(expected.half(), expected) < 1e-3
    assert configs.relative_error(torch.full_like(expected, float("nan")), expected) == float("inf")
    assert configs.relative_error(-expected, expected) == pytest.approx(2.0)


def test_gemv_shared_memory_pipeline_and_fused_sum_compile_to_sm90():
    """GEMV with num_stages >= 3: the weight words go through shared memory by asynchronous copies (TTGIR
    ``async_copy_global_to_local``, SASS ``LDGSTS``), with no spills; with 2 stages, plain loads as before.
    The fused split-K epilogue: a CTA barrier, then one acquire-release GPU-scope atomic per program, partials
    read through L2 (``ld.global.cg``). Compiled in a child process (this one runs kernels interpreted)."""
    code = (
        "for stages in (2, 3):\n"
        "    cfg = KernelConfig('gemv', 32, 256, num_warps=1, num_stages=stages)\n"
        "    k = r.compile_config(cfg, 'bf16', 128, 90)\n"
        "    row = r.report(cfg, 'bf16', 128, 90)\n"
        "    print(k.asm['ttgir'].count('async_copy_global_to_local'), row.split('|')[8].strip())\n"
        "k = r.compile_config(KernelConfig('gemv', 64, 256, split_k=8, num_warps=2, fused_reduce=True), 'bf16', 128, 90)\n"
        "ptx = k.asm['ptx']\n"
        "lines = ptx.splitlines()\n"
        "first = next(i for i, line in enumerate(lines) if 'atom.global.gpu.acq_rel.add' in line)\n"
        "fences = [line.strip() for line in lines[:first] if 'bar.sync' in line or 'st.global' in line]\n"
        "print(fences[-1].startswith('bar.sync'), 'ld.global.cg' in ptx)\n"
    )
    plain, piped, fused = compiled_in_child(code, 3)
    assert plain.split()[0] == "0" and plain.split()[-1] == "0"  # no async copies, no stack
    assert int(piped.split()[0]) >= 2 and piped.split()[-1] == "0"  # a ring of async copies, no stack
    assert fused == "True True"


def test_device_check_script_parses_and_needs_out():
    """benchmarks/device_check.sh (a lent GPU session's checks in one command) is valid bash and refuses to start
    without $OUT, the folder whose files come back, before it installs or runs anything."""
    import os
    import subprocess

    path = os.path.join(os.path.dirname(os.path.dirname(__file__)), "benchmarks", "device_check.sh")
    assert subprocess.run(["bash", "-n", path]).returncode == 0
    env = {k: v for k, v in os.environ.items() if k != "OUT"}
    run = subprocess.run(["bash", path], env=env, capture_output=True, text=True, timeout=60)
    assert run.returncode != 0 and "OUT" in run.stderr and "pip" not in run.stdout + run.stderr


def test_device_check_limits_fit_one_run():
    """device_check.sh's default step limits (each ``${NAME:-seconds}``, one value per name) add up to at most
    590 s, so the whole run, install included, ends inside the device tool's 600 s per command."""
    import os
    import re

    path = os.path.join(os.path.dirname(os.path.dirname(__file__)), "benchmarks", "device_check.sh")
    text = open(path).read()
    limits = {}
    for name, value in re.findall(r"\$\{(\w+_S):-(\d+)\}", text):
        assert limits.setdefault(name, int(value)) == int(value), name  # one default per limit
    assert {"WGMMA_S", "CHECK_S", "MODEL_S", "NCU_S"} <= set(limits)
    assert sum(limits.values()) <= 590, limits


def test_candidates_script_counts_and_ranks_families():
    """benchmarks/candidates.py: the candidate count per M bucket (no GPU, the SM count given; the module's own
    SM lookup is left as it was) and each family's range against the fastest candidate of each goal shape in a
    tuning log, over its splits."""
    script = benchmark_module("candidates")
    lookup = configs.sm_count
    counts = script.count(8192, 8192, 128, 132, (1, 16, 128))
    assert configs.sm_count is lookup
    assert min(counts.values()) > 0 and counts[16] > counts[128]
    sm90 = script.candidates(8192, 8192, 128, 132, (1, 16))  # as on an sm_90 GPU: the Gluon kernels too
    staged_l2 = len(configs.STAGED_L2_TILES) * len(configs.L2_PREFETCH_TILES["staged"])
    assert sum(c.kind == "staged" for c in sm90[1]) == 2 * (len(configs.STAGED_TILES) + staged_l2) and any(c.kind == "wgmma" for c in sm90[16])
    half = script.candidates(8192, 8192, 128, 66, (16,))  # the splits follow the SM count
    assert {c.split_k for c in half[16] if c.kind == "gemm"} != {c.split_k for c in sm90[16] if c.kind == "gemm"}
    fast = "kind='gemv', block_n=64, block_k=256, split_k={}, block_m=1"
    slow = "kind='gemv', block_n=128, block_k=64, split_k={}, block_m=1"
    lines = [f"  M=1 N=8192 K=8192 g=128 KernelConfig({fast.format(8)}): 17.5 us",
             f"  M=1 N=8192 K=8192 g=128 KernelConfig({fast.format(4)}): 21.0 us",
             f"  M=1 N=8192 K=8192 g=128 KernelConfig({slow.format(8)}): 35.0 us",
             f"  M=1 N=14336 K=4096 g=128 KernelConfig({fast.format(4)}): 20.0 us",
             f"  M=1 N=14336 K=4096 g=128 KernelConfig({slow.format(4)}): 16.0 us",
             f"  M=1 N=576 K=576 g=128 KernelConfig({slow.format(1)}): 1.0 us",  # not a goal shape
             "ok   some other line"]
    ranges = script.family_ranges(lines)
    assert list(ranges) == [1]
    (low_fast, high_fast, fam_fast), (low_slow, high_slow, fam_slow) = ranges[1]
    assert "split_k" not in fam_fast and "block_n=64" in fam_fast and "block_n=128" in fam_slow
    assert (low_fast, high_fast) == pytest.approx((1.0, 1.25))  # fastest on 8192^2 (split 8), 20 / 16 elsewhere
    assert (low_slow, high_slow) == pytest.approx((1.0, 2.0))  # fastest on 14336 x 4096, 35 / 17.5 on 8192^2


def test_device_check_skips_a_passed_gluon_check_and_gives_its_time_to_the_tuning(tmp_path):
    """device_check.sh with its commands stubbed (python3, nvidia-smi, timeout print what they were asked): while
    kernels/int4_wgmma.py is the source named in wgmma_check_passed.sha256, the Gluon check does not run and
    gpu_check.py's limit is CHECK_S + WGMMA_S; with another source (or WGMMA_FORCE=1) the check runs first with
    its own limit, and gpu_check.py gets CHECK_S plus what the check left of its limit (here, a stub that returns
    at once, nearly all of it; a stub that sleeps 2 s leaves 2 s less)."""
    import hashlib
    import os
    import shutil
    import subprocess

    root = os.path.dirname(os.path.dirname(__file__))
    repo = tmp_path / "repo"
    for sub in ("benchmarks", "benchmarks/results", "kernels"):
        (repo / sub).mkdir(parents=True)
    shutil.copy(os.path.join(root, "benchmarks", "device_check.sh"), repo / "benchmarks")
    (repo / "kernels" / "int4_wgmma.py").write_text("# the kernel\n")
    digest = hashlib.sha256(b"# the kernel\n").hexdigest()
    stubs = tmp_path / "bin"
    stubs.mkdir()
    for name, body in (("python3", 'echo "python3 $*"'), ("nvidia-smi", "echo gpu"),
                       ("timeout", 'echo "limit $1"; shift; "$@"')):
        (stubs / name).write_text(f"#!/bin/bash\n{body}\n")
        (stubs / name).chmod(0o755)
    env = {**os.environ, "PATH": f"{stubs}:{os.environ['PATH']}", "OUT": str(tmp_path / "out")}
    (tmp_path / "out").mkdir()

    def run(sha: str, **extra) -> list[str]:
        (repo / "benchmarks" / "results" / "wgmma_check_passed.sha256").write_text(f"{sha}  kernels/int4_wgmma.py\n")
        done = subprocess.run(["bash", str(repo / "benchmarks" / "device_check.sh")], env={**env, **extra},
                              capture_output=True, text=True, timeout=60)
        return done.stdout.splitlines()

    skipped = run(digest)
    assert not any("wgmma_check.py" in line for line in skipped)
    assert skipped[skipped.index(next(x for x in skipped if "gpu_check.py" in x)) - 1] == "limit 480"
    for lines in (run("0" * 64), run(digest, WGMMA_FORCE="1")):
        at = lines.index(next(x for x in lines if "wgmma_check.py --no-bench" in x))
        assert lines[at - 1] == "limit 150"
        limit = int(lines[lines.index(next(x for x in lines if "gpu_check.py" in x)) - 1].split()[1])
        assert 478 <= limit <= 480
    (stubs / "python3").write_text('#!/bin/bash\necho "python3 $*"\ncase "$*" in *wgmma_check*) sleep 2;; esac\n')
    lines = run("0" * 64)
    limit = int(lines[lines.index(next(x for x in lines if "gpu_check.py" in x)) - 1].split()[1])
    assert 476 <= limit <= 478


def test_wave_splits_fill_whole_waves():
    """``_wave_splits``: at 132 SMs the 128 row tiles of an 8192-row weight at 4 to 7 programs per SM take splits 4
    to 7 (512 to 924 programs, each at most one wave); too few slots per tile give no split below 2; the K tiles
    cap it. The M = 16 candidates then hold the swapped GEMM at split 5 and 6 (not a power of two)."""
    from unittest import mock

    from awq_ao.kernels import int4_wgmma

    cuda = torch.device("cuda", 0)
    with mock.patch.object(configs, "sm_count", lambda index: 132):
        assert configs._wave_splits(128, 64, cuda) == [4, 5, 6, 7]
        assert configs._wave_splits(1024, 64, cuda) == []
        assert configs._wave_splits(64, 10, cuda) == [8, 10]
        with mock.patch.object(int4_wgmma, "wgmma_available", lambda device: False):
            cands = configs.candidate_configs(16, 8192, 8192, 128, cuda)
    swapped = {c.split_k for c in cands if configs._swapped_async_tile(c) and c.block_n == 64}
    assert {4, 5, 6, 7, 8} <= swapped


def test_l2_prefetch_is_kept_where_a_kernel_takes_it_and_checked():
    """``l2_prefetch`` (tiles each program asks L2 for as it starts) survives fitting for the GEMV (ring or not),
    the GEMM, the Gluon GEMM and the staged GEMV, and the staged one's Triton stand-in; dequant configs drop it; outside 0 .. MAX_L2_TILES it is refused by name; the M = 1 candidates on sm_90 hold it on the GEMV tile at
    twice and four times its base split and on the staged tiles named in the table, the M = 16 ones on the
    column-order swapped GEMM at its two power-of-two splits and on the Gluon GEMM tiles named, at two splits."""
    assert KernelConfig("gemv", 64, 256, split_k=8, l2_prefetch=4).fitted(128, 8192).l2_prefetch == 4
    assert KernelConfig("gemv", 64, 256, num_stages=3, l2_prefetch=4).fitted(128, 8192).l2_prefetch == 4
    assert KernelConfig("gemm", 64, 128, block_m=16, l2_prefetch=4).fitted(128, 8192).l2_prefetch == 4
    assert KernelConfig("staged", 64, 256, split_k=8, l2_prefetch=32).fitted(128, 8192).l2_prefetch == 32
    assert KernelConfig("staged", 64, 256, l2_prefetch=32).fitted(16, 8192) == KernelConfig(
        "gemv", 64, 256, split_k=1, l2_prefetch=32).fitted(16, 8192)  # groups of 16: the Triton GEMV, prefetching
    assert KernelConfig("wgmma", 64, 128, block_m=16, l2_prefetch=4).fitted(128, 8192).l2_prefetch == 4
    assert KernelConfig("dequant", 16, 256, l2_prefetch=4).fitted(128, 8192).l2_prefetch == 0
    for bad in (-1, configs.MAX_L2_TILES + 1):
        with pytest.raises(ValueError, match="l2_prefetch"):
            KernelConfig("gemv", 64, 256, l2_prefetch=bad).fitted(128, 8192)
    import awq_ao.kernels.int4_wgmma as wg
    from unittest import mock
    with mock.patch.object(wg, "wgmma_available", lambda device: True):
        cands = configs.candidate_configs(1, 8192, 8192, 128, CPU)
    l2 = [c for c in cands if c.l2_prefetch]
    base = configs._gemv(1, 8192, 8192, 128, CPU, 64, 256, num_warps=2).split_k
    assert {(c.split_k, c.l2_prefetch) for c in l2 if c.kind == "gemv"} == {
        (base * f, t) for f in (2, 4) for t in configs.L2_PREFETCH_TILES["gemv"]}
    assert {(c.block_n, c.num_warps, c.max_registers) for c in l2 if c.kind == "staged"} == set(configs.STAGED_L2_TILES)
    assert len(cands) == len(set(cands))
    with mock.patch.object(wg, "wgmma_available", lambda device: True), \
            mock.patch.object(configs, "sm_count", lambda index: 132):  # as on an H200
        m16 = [c for c in configs.candidate_configs(16, 8192, 8192, 128, torch.device("cuda", 0)) if c.l2_prefetch]
    gemm = [c for c in m16 if c.kind == "gemm"]
    assert sorted(c.split_k for c in gemm) == [4, 8] and all(c.natural_order and c.swap_ab and not c.fused_reduce
                                                            and c.l2_prefetch == 32 for c in gemm), gemm
    gluon = {(c.block_n, c.prefetch, c.mma_sync) for c in m16 if c.kind == "wgmma"}
    assert gluon == set(configs.GLUON_L2_TILES) and len(m16) == len(gemm) + 2 * len(gluon), m16


def test_l2_prefetch_compiles_to_sm90_prefetches_ahead_of_the_first_loads():
    """With ``l2_prefetch`` the GEMV, the staged GEMV, the GEMM and the Gluon GEMM (mma.sync) compile for sm_90 with
    one ``CCTL.E.PF2`` (an L2
    prefetch) per 128-byte line of the tiles asked for, all before the kernel's first global load (the staged
    kernel's: its activation staging), none in the main loop, and with as many programs per SM (registers) and
    loop instructions per weight as the same config without it (Triton 3.6, the H200's: 128 registers either
    way for the GEMV, 3.34 and 3.35 instructions per weight; 3.9: 158 and 161, 6 programs per SM either way). Compiled in a child process (this one runs TRITON_INTERPRET)."""
    code = (
        "import dataclasses\n"
        "for cfg in (KernelConfig('gemv', 64, 256, split_k=4, num_warps=2, l2_prefetch=2).fitted(128, 4096),\n"
        "            KernelConfig('staged', 64, 256, split_k=4, num_warps=2, l2_prefetch=32).fitted(128, 4096),\n"
        "            KernelConfig('gemm', 64, 128, block_m=16, split_k=4, num_stages=3, swap_ab=True, prefetch=1,\n"
        "                         natural_order=True, l2_prefetch=32).fitted(128, 4096),\n"
        "            KernelConfig('wgmma', 64, 128, block_m=16, split_k=4, prefetch=2, mma_sync=True,\n"
        "                         l2_prefetch=32).fitted(128, 4096)):\n"
        "    for c in (cfg, dataclasses.replace(cfg, l2_prefetch=0)):\n"
        "        usage, sass = r.cuobjdump(r.compile_config(c, 'bf16', 128, 90))\n"
        "        lines = [l for l in sass.splitlines() if re.search(r'/\\*[0-9a-f]{4}\\*/', l)]\n"
        "        first_ldg = next(i for i, l in enumerate(lines) if 'LDG' in l)\n"
        "        pf = [i for i, l in enumerate(lines) if 'CCTL.E.PF2' in l]\n"
        "        loop = r.main_loop(sass)\n"
        "        row = [x.strip() for x in r.report(c, 'bf16', 128, 90).split('|')]\n"
        "        print(c.kind, c.l2_prefetch, len(pf), all(i < first_ldg for i in pf),\n"
        "              sum('CCTL' in l for l in loop), row[7], row[10])\n")
    rows = [line.split() for line in compiled_in_child(code, 8)]
    (gemv, gemv0), (staged, staged0), (gemm, gemm0), (gluon, gluon0) = rows[0:2], rows[2:4], rows[4:6], rows[6:8]
    # GEMV: 2 tiles x 1 line; staged: the split's 4 tiles (4096 / 256 / 4), 1 line each; GEMM: 32 asked, its
    # split's 8 tiles exist (4096 / 128 / 4), each request predicated
    assert gemv[:5] == ["gemv", "2", "2", "True", "0"] and gemv0[2] == "0", gemv
    assert staged[:5] == ["staged", "32", "4", "True", "0"] and staged0[2] == "0", staged
    assert gemm[:2] == ["gemm", "32"] and int(gemm[2]) >= 8 and gemm[3:5] == ["True", "0"] and gemm0[2] == "0", gemm
    assert gluon[:5] == ["wgmma", "32", "8", "True", "0"] and gluon0[2] == "0", gluon  # min(32, its split's 8)
    # programs per SM by registers (allocated in steps of 8; 2 warps, 2 and 4), loop instructions per weight (the
    # GEMM's with Triton 3.9: 5.20 -> 5.31; 3.6, the H200's: 5.42 -> 5.41)
    for with_l2, without, threads, slack in ((gemv, gemv0, 64, 0.03), (staged, staged0, 64, 0.03),
                                             (gemm, gemm0, 128, 0.15), (gluon, gluon0, 128, 0.03)):
        assert 65536 // (threads * -(-int(with_l2[5]) // 8 * 8)) == 65536 // (threads * -(-int(without[5]) // 8 * 8)), (
            with_l2, without)
        assert abs(float(with_l2[6]) - float(without[6])) <= slack, (with_l2, without)
