"""Integer-to-float unpacking of int4 words without conversion instructions; shared by the kernels.

A word (int32) holds columns 8j .. 8j+7, column 8j+i in bits 4i .. 4i+3.

fp32 planes (``nibble_plane``, the GEMM's fp32 path): OR-ing a nibble that
sits at bit position 4p into the bits of the float 2**23 (0x4B000000) gives
the float ``2**23 + q * 16**p`` exactly (one LOP3 on the GPU, where an
integer-to-float conversion runs at a quarter of the FMA rate). Subtracting
``2**23 + z * 16**p`` leaves ``(q - z) * 16**p`` exactly, and the kernel
multiplies that column's activation by ``16**-p`` (exact: a power of two).
Nibbles 0..4 are used in place (p = i), nibbles 5..7 after one shift of the
word by 20 bits (p = i - 5): one shift per word, one LOP3 per weight.

Packed 16-bit pairs (``nibble_pair16``, the GEMM's bf16 and fp16 operands):
the same trick in 16-bit halves, two weights per 32-bit operation. ``(w >>
4i) & 0x000F000F`` puts nibbles i and i + 4 in the low bits of each half;
OR-ing the 16-bit magic (128.0 in bf16, 1024.0 in fp16: the mantissa's last
bit is 1) gives ``magic + q`` in each half, and subtracting ``magic + z``
(exact in either dtype: at most 8 significant bits) leaves ``q - z`` exactly,
as one packed HADD2 per pair on sm_90: no factor 16**p, no fp32 round trip.
``byte_pair16`` makes the column-order pairs instead (columns 2i and 2i + 1,
byte i's two nibbles), for the GEMM's ``natural_order``. ``scaled_pair16`` then multiplies by the row's scale, one more packed
operation per pair (HMUL2), rounded once to DTYPE: the GEMM's MMA operand.
"""

import triton
import triton.language as tl

MAGIC_BITS = 0x4B000000  # the float 2**23, passed to the kernels as an argument
MAGIC_PAIR_BF16 = 0x43004300  # two bf16 128.0 (7 mantissa bits: the nibble lands in the low 4, exponent 2**7)
MAGIC_PAIR_FP16 = 0x64006400  # two fp16 1024.0 (10 mantissa bits, exponent 2**10)
_TWO_ONES = {"bf16x2": 0x3F803F80, "f16x2": 0x3C003C00}  # two 1.0s of each packed type, as an int32


def pair_ptx(kind: str, byte_permute: bool = False, packed_operands: bool = False) -> str:
    """PTX of the CUDA unpacking of one weight pair (``kind``: bf16x2 / f16x2), ``scaled_pair16``'s arithmetic.

    LOP3 ``(w & 0x000F000F) | magic`` (``$2``: the word shifted to the pair, ``$5``: the magic), then two
    packed FMAs: ``t * 1 + (-(magic + z))`` (exact) and ``(q - z) * s + (-0)`` (one rounding; an FMA, not
    ``mul.bf16x2``, which sm_80 lacks); the halves go out as ``$0`` and ``$1``. ``-(magic + z)`` and ``s``
    come as 16-bit ``$3`` and ``$4``, or (``packed_operands``) already in both halves of a 32-bit register.
    ``byte_permute`` (column order): first ``PRMT t, $2, $5, $6`` (the word, the word >> 4, the selector),
    and the magic is ``$7``.
    """
    regs, setup, nz, s = ("t, one, mz", "", "$3", "$4") if packed_operands else (
        "t, one, nz, s, mz", "mov.b32 nz, {$3, $3}; mov.b32 s, {$4, $4}; ", "nz", "s")
    unpack = ("prmt.b32 t, $2, $5, $6; lop3.b32 t, t, 983055, $7, 0xEA; " if byte_permute
              else "lop3.b32 t, $2, 983055, $5, 0xEA; ")
    return ("{ .reg .b32 " + regs + "; "
            f"mov.b32 one, {_TWO_ONES[kind]}; mov.b32 mz, 2147516416; "  # mz: two -0.0
            + setup + unpack
            + f"fma.rn.{kind} t, t, one, {nz}; fma.rn.{kind} t, t, {s}, mz; mov.b32 {{$0, $1}}, t; }}")


@triton.jit
def nibble_plane(words, i: tl.constexpr, z, magic_bits):
    """Column 8j+i of every word as fp32 ``(q - z) * 16**p``, exact.

    words: int32 [..., J]; z: fp32 zero points, broadcastable to words;
    magic_bits: the int32 0x4B000000, passed at run time so that it stays in a
    register and the mask is LOP3's immediate (as a constant, ptxas keeps
    re-materialising the masks instead).
    """
    if i < 5:
        w = words
        p: tl.constexpr = i
    else:
        w = words >> 20
        p: tl.constexpr = i - 5
    zero_magic = z * (1 << (4 * p)) + 8388608.0
    return ((w & (0xF << (4 * p))) | magic_bits).to(tl.float32, bitcast=True) - zero_magic


@triton.jit
def column_factor(k):
    """fp32 ``16**-p`` for columns k: the inverse of their plane's factor."""
    i = k % 8
    p = tl.where(i < 5, i, i - 5)
    return tl.exp2(-4.0 * p.to(tl.float32))


@triton.jit
def nibble_pair16(words, i: tl.constexpr, zero_magic, magic_pair, DTYPE: tl.constexpr):
    """Columns 8j+i and 8j+i+4 (i in 0..3) of every word as DTYPE (bf16 / fp16) ``q - z``, exact.

    words: int32 [..., J]; zero_magic: ``magic + z`` in DTYPE, broadcastable to
    words; magic_pair: the int32 ``MAGIC_PAIR_BF16`` / ``MAGIC_PAIR_FP16``
    (a run-time argument, for the reason ``nibble_plane`` gives). Returns two
    [..., J] tensors in DTYPE.
    """
    w = words if i == 0 else words >> (4 * i)
    return _pair_halves((w & 0x000F000F) | magic_pair, zero_magic, DTYPE)


@triton.jit
def byte_pair16(words, i: tl.constexpr, zero_magic, magic_pair, DTYPE: tl.constexpr):
    """Columns 8j+2i and 8j+2i+1 (i in 0..3: the two nibbles of byte i) of every word as DTYPE ``q - z``, exact.

    The column-order twin of ``nibble_pair16`` (same arguments and results):
    the low nibble of byte i goes to bits 0..3 and its high nibble, shifted
    left by 12, to bits 16..19. On CUDA the GEMM does this with one byte
    permute (``PRMT``) of the word and the word >> 4 (``int4_gemm._byte_pair_asm``).
    """
    w = words if i == 0 else words >> (8 * i)
    return _pair_halves((w & 0x0000000F) | ((w << 12) & 0x000F0000) | magic_pair, zero_magic, DTYPE)


@triton.jit
def _pair_halves(pair, zero_magic, DTYPE: tl.constexpr):
    """int32 ``pair`` (two DTYPE ``magic + q`` halves) -> its low and high halves as DTYPE ``q - z``."""
    low = pair.to(tl.uint16).to(DTYPE, bitcast=True)  # the cast keeps the low 16 bits
    high = (pair >> 16).to(tl.uint16).to(DTYPE, bitcast=True)
    return low - zero_magic, high - zero_magic


@triton.jit
def scaled_pair16(words, i: tl.constexpr, zero_magic, scale, magic_pair, DTYPE: tl.constexpr,
                  NATURAL: tl.constexpr):
    """``nibble_pair16`` (or with NATURAL ``byte_pair16``) times ``scale`` (DTYPE, broadcastable to words):
    ``(q - z) * s`` rounded once to DTYPE.

    The product of two 16-bit floats is exact in fp32, so rounding it to DTYPE
    equals the GPU's packed ``fma.rn(q - z, s, -0)``.
    """
    if NATURAL:
        low, high = byte_pair16(words, i, zero_magic, magic_pair, DTYPE)
    else:
        low, high = nibble_pair16(words, i, zero_magic, magic_pair, DTYPE)
    s = scale.to(tl.float32)
    return (low.to(tl.float32) * s).to(DTYPE), (high.to(tl.float32) * s).to(DTYPE)
