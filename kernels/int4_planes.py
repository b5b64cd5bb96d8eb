"""Integer-to-float unpacking of int4 words without conversion instructions; shared by the kernels.

A word (int32) holds columns 8j .. 8j+7, column 8j+i in bits 4i .. 4i+3.
OR-ing a nibble that sits at bit position 4p into the bits of the float 2**23
(0x4B000000) gives the float ``2**23 + q * 16**p`` exactly (one LOP3 on the
GPU, where an integer-to-float conversion runs at a quarter of the FMA rate).
Subtracting ``2**23 + z * 16**p`` leaves ``(q - z) * 16**p`` exactly, and the
kernels multiply that column's activation by ``16**-p`` (exact: a power of two).

Two schemes, chosen by the dtype the planes are cast to:

* WIDE (fp32, bf16): nibbles 0..4 in place (p = i), nibbles 5..7 after one
  shift of the word by 20 bits (p = i - 5): one shift per word, one LOP3 per
  weight. ``(q - z) * 16**4`` stays exact in bf16 (4 significant bits).
* pairs (fp16, whose range ends at 65504): the word is shifted by 8 bits per
  pair of nibbles, p = i % 2.
"""

import triton
import triton.language as tl

MAGIC_BITS = 0x4B000000  # the float 2**23, passed to the kernels as an argument


@triton.jit
def nibble_plane(words, i: tl.constexpr, z, magic_bits, WIDE: tl.constexpr):
    """Column 8j+i of every word as fp32 ``(q - z) * 16**p``, exact.

    words: int32 [..., J]; z: fp32 zero points, broadcastable to words;
    magic_bits: the int32 0x4B000000, passed at run time so that it stays in a
    register and the mask is LOP3's immediate (as a constant, ptxas keeps
    re-materialising the masks instead).
    """
    if WIDE:
        if i < 5:
            w = words
            p: tl.constexpr = i
        else:
            w = words >> 20
            p: tl.constexpr = i - 5
    else:
        if i < 2:
            w = words
        else:
            w = words >> (8 * (i // 2))
        p: tl.constexpr = i % 2
    zero_magic = z * (1 << (4 * p)) + 8388608.0
    return ((w & (0xF << (4 * p))) | magic_bits).to(tl.float32, bitcast=True) - zero_magic


@triton.jit
def column_factor(k, WIDE: tl.constexpr):
    """fp32 ``16**-p`` for columns k: the inverse of their plane's factor."""
    i = k % 8
    if WIDE:
        p = tl.where(i < 5, i, i - 5)
    else:
        p = i % 2
    return tl.exp2(-4.0 * p.to(tl.float32))
