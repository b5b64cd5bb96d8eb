"""The GEMM's inline-PTX unpacking, run by a small emulator of its few instructions (no GPU needed).

On CUDA the bf16 / fp16 GEMM unpacks weight pairs in PTX (``int4_gemm._pair_asm``,
``_byte_pair_asm``, and the Gluon kernel's ``int4_wgmma._pair``, which no interpreter runs); the interpreter, which runs the tests, takes their Triton-op twins
instead, so the PTX strings themselves would otherwise meet their first check on a GPU.
Here each string runs lane by lane on random words, zero points and scales and must give
the two columns it promises, ``(q - z) * s`` rounded once to the dtype, bit for bit.
"""

import pytest
import torch

from ptx_emulator import DTYPES, float_to_halves, run_ptx

from awq_ao.kernels import int4_gemm, int4_wgmma

def _case(dtype, lanes=4096, seed=0):
    gen = torch.Generator().manual_seed(seed)
    words = torch.randint(0, 2**32, (lanes,), generator=gen, dtype=torch.int64)
    z = torch.randint(0, 16, (lanes,), generator=gen)
    scale = (torch.rand(lanes, generator=gen) * 0.02 + 1e-4).to(dtype)
    magic = 128.0 if dtype == torch.bfloat16 else 1024.0
    neg_zero_magic = float_to_halves(-(z.float() + magic), dtype)
    return words, z, scale, neg_zero_magic


def _expected(words, column, z, scale, dtype):
    q = (words >> (4 * column)) & 0xF
    return float_to_halves((q - z).float() * scale.float(), dtype)


def _signed_shift(words, bits):
    """The 32-bit pattern of ``int32(words) >> bits`` (arithmetic, as Triton shifts an int32)."""
    signed = torch.where(words >= 2**31, words - 2**32, words)
    return (signed >> bits) & 0xFFFFFFFF


@pytest.mark.parametrize("kind", ["bf16x2", "f16x2"])
@pytest.mark.parametrize("pair", range(4))
def test_byte_pair_ptx_gives_columns_2p_and_2p_plus_1(kind, pair):
    """``_byte_pair_asm`` (the GEMM's ``natural_order``): PRMT of the word and the word >> 4 with the kernel's
    selector, LOP3, two packed FMAs -> columns 2p and 2p + 1 as ``(q - z) * s`` in the dtype."""
    dtype = DTYPES[kind]
    ptx = (int4_gemm._BYTE_PAIR_PTX_BF16 if dtype == torch.bfloat16 else int4_gemm._BYTE_PAIR_PTX_FP16).value
    words, z, scale, neg = _case(dtype, seed=pair)
    select = pair | (pair << 4) | ((4 + pair) << 8) | ((4 + pair) << 12)  # as _byte_pair_asm passes it
    magic = 0x43004300 if dtype == torch.bfloat16 else 0x64006400
    low, high = run_ptx(ptx, {"$2": words, "$3": neg, "$4": scale.view(torch.int16).to(torch.int64) & 0xFFFF,
                              "$5": _signed_shift(words, 4), "$6": torch.full_like(words, select),
                              "$7": torch.full_like(words, magic)})
    assert torch.equal(low, _expected(words, 2 * pair, z, scale, dtype))
    assert torch.equal(high, _expected(words, 2 * pair + 1, z, scale, dtype))


@pytest.mark.parametrize("kind", ["bf16x2", "f16x2"])
@pytest.mark.parametrize("pair", range(4))
def test_pair_ptx_gives_columns_p_and_p_plus_4(kind, pair):
    """``_pair_asm`` (the default pair order), on the word shifted by 4p as the kernel passes it: columns p and
    p + 4."""
    dtype = DTYPES[kind]
    ptx = (int4_gemm._PAIR_PTX_BF16 if dtype == torch.bfloat16 else int4_gemm._PAIR_PTX_FP16).value
    words, z, scale, neg = _case(dtype, seed=10 + pair)
    magic = 0x43004300 if dtype == torch.bfloat16 else 0x64006400
    low, high = run_ptx(ptx, {"$2": _signed_shift(words, 4 * pair), "$3": neg,
                              "$4": scale.view(torch.int16).to(torch.int64) & 0xFFFF,
                              "$5": torch.full_like(words, magic)})
    assert torch.equal(low, _expected(words, pair, z, scale, dtype))
    assert torch.equal(high, _expected(words, pair + 4, z, scale, dtype))


@pytest.mark.parametrize("kind", ["bf16x2", "f16x2"])
@pytest.mark.parametrize("pair", range(4))
def test_wgmma_pair_ptx_with_packed_operands(kind, pair):
    """``int4_wgmma._pair`` (the Gluon kernel's unpacking): as ``_pair_asm``, but the zero term and the scale
    come packed (the row's value in both halves, made once per row and tile): columns p and p + 4."""
    dtype = DTYPES[kind]
    ptx = int4_wgmma.PAIR_PTX_BF16 if dtype == torch.bfloat16 else int4_wgmma.PAIR_PTX_FP16
    words, z, scale, neg = _case(dtype, seed=20 + pair)
    scale_bits = scale.view(torch.int16).to(torch.int64) & 0xFFFF
    magic = 0x43004300 if dtype == torch.bfloat16 else 0x64006400
    low, high = run_ptx(ptx, {"$2": _signed_shift(words, 4 * pair), "$3": neg | (neg << 16),
                              "$4": scale_bits | (scale_bits << 16), "$5": torch.full_like(words, magic)})
    assert torch.equal(low, _expected(words, pair, z, scale, dtype))
    assert torch.equal(high, _expected(words, pair + 4, z, scale, dtype))


@pytest.mark.parametrize("kind", ["bf16x2", "f16x2"])
@pytest.mark.parametrize("pair", range(4))
def test_raw_pair_ptx_gives_magic_plus_q(kind, pair):
    """``int4_wgmma.RAW_PAIR_PTX`` (``late_dequant``: one LOP3 per pair): columns p and p + 4 as the 16-bit float
    ``magic + q``, exactly, with the magic the kernel passes (its value ``MAGIC_VALUE``)."""
    dtype = DTYPES[kind]
    words, _, _, _ = _case(dtype, seed=30 + pair)
    magic = 0x43004300 if dtype == torch.bfloat16 else 0x64006400
    low, high = run_ptx(int4_wgmma.RAW_PAIR_PTX, {"$2": _signed_shift(words, 4 * pair),
                                                   "$3": torch.full_like(words, magic)})
    for half, column in ((low, pair), (high, pair + 4)):
        q = (words >> (4 * column)) & 0xF
        assert torch.equal(half, float_to_halves(q.float() + int4_wgmma.MAGIC_VALUE[dtype], dtype))


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_wgmma_zero_term_by_integer_arithmetic(dtype):
    """The Gluon kernel makes ``-(magic + z)`` in both halves as ``NEG_MAGIC_PAIR + z * 0x10001`` (one integer
    multiply-add): bit for bit the 16-bit float ``-(magic + z)`` in each half, for every zero point."""
    z = torch.arange(16)
    magic = 128.0 if dtype == torch.bfloat16 else 1024.0
    halves = float_to_halves(-(z.float() + magic), dtype)
    packed = (z * 0x10001 + int4_wgmma.NEG_MAGIC_PAIR[dtype]) & 0xFFFFFFFF
    assert torch.equal(packed, halves | (halves << 16))


def test_emulator_catches_a_wrong_selector():
    """The emulator is not vacuous: the selector of the neighbouring byte gives other columns."""
    dtype = torch.bfloat16
    words, z, scale, neg = _case(dtype, seed=99)
    low, _ = run_ptx(int4_gemm._BYTE_PAIR_PTX_BF16.value,
                     {"$2": words, "$3": neg, "$4": scale.view(torch.int16).to(torch.int64) & 0xFFFF,
                      "$5": _signed_shift(words, 4), "$6": torch.full_like(words, 0x5511),
                      "$7": torch.full_like(words, 0x43004300)})
    assert not torch.equal(low, _expected(words, 0, z, scale, dtype))
    assert torch.equal(low, _expected(words, 2, z, scale, dtype))
