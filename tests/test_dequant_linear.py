"""The CPU dequantize-then-matmul path by blocks of rows (awq_ao/dequant_linear.py) against the reference
``quant.dequantize`` + ``F.linear``."""

import pytest
import torch
import torch.nn.functional as F
from helpers import rel_err

import awq_ao  # noqa: F401  (registers the ops)
from awq_ao import dequant_linear, quant


def random_int4(n, k_pad, group, scale_dtype, seed=0):
    """Codes 0..15 with zero points over the whole 0..15 range (q - z from -15 to 15), packed."""
    gen = torch.Generator().manual_seed(seed)
    q = torch.randint(0, 16, (n, k_pad), generator=gen, dtype=torch.uint8)
    zero = torch.randint(0, 16, (n, k_pad // group), generator=gen, dtype=torch.uint8)
    scale = (torch.rand(n, k_pad // group, generator=gen) * 0.02 + 1e-3).to(scale_dtype)
    return q, quant.pack_int4(q), scale, zero


@pytest.mark.parametrize("group", [32, 64, 128, 256])
@pytest.mark.parametrize("out_dtype", [torch.bfloat16, torch.float16, torch.float32])
@pytest.mark.parametrize("scale_dtype", [torch.bfloat16, torch.float16, torch.float32])
def test_rows_dequantize_bit_for_bit(group, out_dtype, scale_dtype):
    q, packed, scale, zero = random_int4(24, 2 * group, group, scale_dtype)
    codes = torch.full((24, 2 * group), 0xAB, dtype=torch.uint8)  # stale contents must not leak through
    out = torch.full((24, 2 * group), float("nan"), dtype=out_dtype)
    got = dequant_linear.dequantize_rows_into(packed, scale, zero, group, codes, out)
    assert got.data_ptr() == out.data_ptr()
    assert torch.equal(got, quant.dequantize(q, scale, zero, group, dtype=out_dtype))


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32, torch.float16])
@pytest.mark.parametrize("m", [0, 1, 7])
def test_blocks_match_the_whole_weight(monkeypatch, dtype, m):
    """Several blocks, the last one short, a K tail (in_features < K_pad): the reference's product."""
    n, k, group = 200, 100, 32  # K_pad 128
    q, packed, scale, zero = random_int4(n, 128, group, dtype, seed=m)
    monkeypatch.setattr(dequant_linear, "BLOCK_BYTES", 48 * 128 * torch.tensor([], dtype=dtype).element_size())
    x = torch.randn(m, k).to(dtype)
    got = dequant_linear.linear_by_row_blocks(x, packed, scale, zero, group, k)
    expected = F.linear(x, quant.dequantize(q, scale, zero, group, k, dtype))
    assert got.shape == (m, n) and got.dtype == dtype and got.is_contiguous()
    if m:
        assert rel_err(got, expected) < {torch.float32: 1e-6}.get(dtype, 1e-2)
        # the blocks' rows (48 each, the last 8) hold the same products as the whole weight's
        assert rel_err(got[:, 192:], expected[:, 192:]) < {torch.float32: 1e-6}.get(dtype, 1e-2)


def test_op_on_cpu_with_pre_scale_and_leading_dims(monkeypatch):
    """``awq_ao::int4_linear_dequant`` on CPU (prefill, fp32 / fp16 models) goes by blocks: same result."""
    n, k, group = 96, 256, 64
    q, packed, scale, zero = random_int4(n, k, group, torch.float32, seed=3)
    monkeypatch.setattr(dequant_linear, "BLOCK_BYTES", 32 * k * 4)  # 3 blocks
    x = torch.randn(2, 5, k)
    pre = torch.rand(k) + 0.5
    got = torch.ops.awq_ao.int4_linear_dequant(x, packed, scale, zero, pre, group, k)
    expected = F.linear(x * pre, quant.dequantize(q, scale, zero, group, k, torch.float32))
    assert got.shape == (2, 5, n)
    assert rel_err(got, expected) < 1e-6
