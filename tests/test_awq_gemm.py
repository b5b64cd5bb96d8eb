"""AWQ GEMM tensor layout: round trip, and an unpacker written from the format's description alone."""

import pytest
import torch

from awq_ao import AWQInt4Tensor
from awq_ao.formats.awq_gemm import from_awq_gemm, to_awq_gemm

FORMAT_ORDER = [0, 2, 4, 6, 1, 3, 5, 7]  # from the format description, not imported


def independent_dequantize(qweight, qzeros, scales, group_size):
    """w [K, N] from AWQ GEMM tensors, one word at a time in plain Python integers."""
    k, words = qweight.shape
    n = words * 8

    def unpack(packed):
        rows = []
        for row in packed.tolist():
            values = [0] * n
            for j, word in enumerate(row):
                word &= 0xFFFFFFFF
                for i in range(8):
                    values[8 * j + FORMAT_ORDER[i]] = (word >> (4 * i)) & 0xF
            rows.append(values)
        return torch.tensor(rows, dtype=torch.float64)

    q, z = unpack(qweight), unpack(qzeros)
    g = torch.arange(k) // group_size
    return (q - z[g]) * scales.double()[g]


@pytest.mark.parametrize("group_size", [16, 32])
def test_export_matches_an_independent_unpacker_and_round_trips_bit_exact(group_size):
    w = torch.randn(24, 64, dtype=torch.float16)
    q = AWQInt4Tensor.from_float(w, bits=4, group_size=group_size)
    t = to_awq_gemm(q)
    assert t["qweight"].dtype == torch.int32 and tuple(t["qweight"].shape) == (64, 3)
    assert tuple(t["qzeros"].shape) == (64 // group_size, 3) and t["scales"].dtype == torch.float16
    ref = q.dequantize(torch.float64).t()
    assert torch.equal(independent_dequantize(t["qweight"], t["qzeros"], t["scales"], group_size), ref)
    back = from_awq_gemm(t["qweight"], t["qzeros"], t["scales"], group_size, torch.float16)
    assert torch.equal(back.qdata, q.qdata) and torch.equal(back.zero_point, q.zero_point)
    assert torch.equal(back.scale, q.scale)


def test_bf16_scales_round_to_fp16():
    q = AWQInt4Tensor.from_float(torch.randn(16, 32, dtype=torch.bfloat16), bits=4, group_size=16)
    back = from_awq_gemm(**to_awq_gemm(q), group_size=16, dtype=torch.bfloat16)
    assert torch.equal(back.qdata, q.qdata)
    assert torch.equal(back.scale, q.scale.to(torch.float16).to(torch.bfloat16))


def test_refusals_name_the_fix():
    w = torch.randn(16, 32)
    with pytest.raises(ValueError, match="act_pre_scale.*gqa='fold'"):
        to_awq_gemm(AWQInt4Tensor.from_float(w, 4, 16, act_pre_scale=torch.rand(32) + 0.5), "o_proj")
    with pytest.raises(ValueError, match="bits=3"):
        to_awq_gemm(AWQInt4Tensor.from_float(w, 3, 16))
    with pytest.raises(ValueError, match="does not divide in_features 40"):
        to_awq_gemm(AWQInt4Tensor.from_float(torch.randn(16, 40), 4, 16))
    t = to_awq_gemm(AWQInt4Tensor.from_float(w, 4, 16))
    with pytest.raises(ValueError, match="qzeros has shape"):
        from_awq_gemm(t["qweight"], t["qzeros"][:1], t["scales"], 16)
    with pytest.raises(ValueError, match="int32"):
        from_awq_gemm(t["qweight"].float(), t["qzeros"], t["scales"], 16)
