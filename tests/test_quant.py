"""The reference quantization math in awq_ao/quant.py."""

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from awq_ao import quant


def naive_quantize(w, bits, group_size, zero_point=True, clip_ratio=None):
    """A per-group loop written from AWQ's formulas, independent of quant.py's tensor code."""
    n, k = w.shape
    n_groups = math.ceil(k / group_size)
    q = torch.zeros(n, n_groups * group_size, dtype=torch.uint8)
    scales = torch.zeros(n, n_groups)
    zeros = torch.zeros(n, n_groups, dtype=torch.uint8)
    top = 2**bits - 1
    for i in range(n):
        for g in range(n_groups):
            cols = slice(g * group_size, min((g + 1) * group_size, k))
            grp = w[i, cols].float()
            hi, lo = grp.max(), grp.min()
            if clip_ratio is not None:
                bound = grp.abs().max() * clip_ratio
                hi, lo = torch.minimum(hi, bound), torch.maximum(lo, -bound)
            if zero_point:
                s = torch.clamp(hi - lo, min=1e-5) / top
                s = s.to(w.dtype).float()
                z = torch.clamp(torch.round(-lo / s), 0, top)
            else:
                s = torch.clamp(torch.maximum(hi.abs(), lo.abs()), min=1e-5) / (2 ** (bits - 1) - 1)
                s = s.to(w.dtype).float()
                z = torch.tensor(2.0 ** (bits - 1))
            codes = torch.clamp(torch.round(grp / s) + z, 0, top)
            q[i, g * group_size: g * group_size + codes.numel()] = codes.to(torch.uint8)
            q[i, g * group_size + codes.numel(): (g + 1) * group_size] = int(z)
            scales[i, g], zeros[i, g] = s, int(z)
    return q, scales, zeros


@pytest.mark.parametrize("bits", [2, 3, 4])
@pytest.mark.parametrize("group_size,k", [(32, 96), (64, 100), (128, 576), (16, 7)])
@pytest.mark.parametrize("zero_point", [True, False])
def test_matches_independent_loop(bits, group_size, k, zero_point):
    w = torch.randn(5, k) * torch.rand(5, 1) * 3
    q, s, z = quant.quantize(w, bits, group_size, zero_point)
    q_ref, s_ref, z_ref = naive_quantize(w, bits, group_size, zero_point)
    assert torch.equal(s.float(), s_ref)
    assert torch.equal(z, z_ref)
    assert torch.equal(q, q_ref)


def test_clip_ratio_matches_independent_loop():
    w = torch.randn(4, 64)
    q, s, z = quant.quantize(w, 4, 32, clip_ratio=0.7)
    q_ref, s_ref, z_ref = naive_quantize(w, 4, 32, clip_ratio=0.7)
    assert torch.equal(q, q_ref) and torch.equal(s.float(), s_ref) and torch.equal(z, z_ref)
    deq = quant.dequantize(q, s, z, 32)
    absmax = w.view(4, 2, 32).abs().amax(-1, keepdim=True)
    assert (deq.view(4, 2, 32).abs() <= 0.7 * absmax + s.view(4, 2, 1) + 1e-6).all()


def test_two_sided_clip_ratio():
    """[N, n_groups, 2] caps the low and the high side separately; equal sides equal the one-ratio form."""
    w = torch.randn(4, 64)
    same = torch.full((4, 2, 2), 0.7)
    assert all(torch.equal(a, b) for a, b in zip(quant.quantize(w, 4, 32, clip_ratio=same),
                                                 quant.quantize(w, 4, 32, clip_ratio=0.7)))
    sides = torch.stack([torch.full((4, 2), 1.0), torch.full((4, 2), 0.5)], dim=-1)  # clip only the top
    deq = quant.fake_quantize(w, 4, 32, clip_ratio=sides).view(4, 2, 32)
    grouped = w.view(4, 2, 32)
    absmax = grouped.abs().amax(-1, keepdim=True)
    step = (deq.amax(-1) - deq.amin(-1)).unsqueeze(-1) / 15
    assert (deq <= 0.5 * absmax + step).all()
    assert (deq.amin(-1, keepdim=True) <= grouped.amin(-1, keepdim=True) + step).all()  # low side kept


@settings(max_examples=40, deadline=None)
@given(
    n=st.integers(1, 9),
    k=st.integers(1, 300),
    bits=st.sampled_from([2, 3, 4]),
    log_group=st.integers(3, 8),
    zero_point=st.booleans(),
    dtype=st.sampled_from([torch.float32, torch.float16, torch.bfloat16]),
    seed=st.integers(0, 2**31),
)
def test_round_trip_error_within_half_step(n, k, bits, log_group, zero_point, dtype, seed):
    group_size = 2**log_group
    w = (torch.randn(n, k, generator=torch.Generator().manual_seed(seed)) * 2).to(dtype)
    q, s, z = quant.quantize(w, bits, group_size, zero_point)
    k_pad = quant.padded_in_features(k, group_size)
    assert q.shape == (n, k_pad) and q.dtype == torch.uint8
    assert s.shape == z.shape == (n, k_pad // group_size) and s.dtype == dtype
    assert int(q.max()) <= 2**bits - 1 and int(z.max()) <= 2**bits - 1
    # padding dequantizes to exactly zero and never shows
    full = quant.dequantize(q, s, z, group_size, dtype=torch.float32)
    assert torch.all(full[:, k:] == 0)
    deq = quant.dequantize(q, s, z, group_size, k, torch.float32)
    assert deq.shape == (n, k)
    step = s.float().repeat_interleave(group_size, dim=1)[:, :k]
    err = (deq - w.float()).abs()
    # rounding the scale to its dtype may shorten the grid by up to (2**bits - 1) * eps steps
    tol = 1e-6 * w.float().abs().max() + step * (2**bits - 1) * torch.finfo(dtype).eps
    if zero_point:
        # AWQ clamps z to [0, 2**bits - 1]: only groups whose range holds 0 keep the half-step bound
        padded = torch.nn.functional.pad(w.float(), (0, k_pad - k))
        grouped = padded.view(n, -1, group_size)
        lo = torch.where(torch.arange(k_pad).view(1, -1, group_size) < k, grouped, float("inf")).amin(-1)
        hi = torch.where(torch.arange(k_pad).view(1, -1, group_size) < k, grouped, -float("inf")).amax(-1)
        straddles = ((lo <= 0) & (hi >= 0)).repeat_interleave(group_size, dim=1)[:, :k]
        assert (err <= step / 2 + tol)[straddles].all()
    else:  # the symmetric grid is one step shorter on the positive side
        assert (err <= step + tol).all()
    # dequantized weights quantize again to the same codes under the same qparams
    again = quant.quantize_with_qparams(deq, s, z, bits, group_size)
    assert torch.equal(again, q)


def test_padding_takes_no_part_in_scales():
    w = torch.randn(3, 100) + 5.0  # all positive: a zero pad would move the minimum
    q, s, z = quant.quantize(w, 4, 64)
    tail = w[:, 64:]
    expected = (tail.max(1).values - tail.min(1).values) / 15
    assert torch.allclose(s[:, 1], expected)


@settings(max_examples=30, deadline=None)
@given(n=st.integers(1, 6), half_k=st.integers(1, 64))
def test_pack_unpack_round_trip(n, half_k):
    q = torch.randint(0, 16, (n, 2 * half_k), dtype=torch.uint8)
    packed = quant.pack_int4(q)
    assert packed.shape == (n, half_k) and packed.dtype == torch.uint8
    assert torch.equal(packed[:, 0] & 0xF, q[:, 0]) and torch.equal(packed[:, 0] >> 4, q[:, 1])
    assert torch.equal(quant.unpack_int4(packed), q)


def test_fake_quantize_keeps_dtype_and_shape():
    w = torch.randn(8, 50, dtype=torch.bfloat16)
    out = quant.fake_quantize(w, 3, 16)
    assert out.dtype == torch.bfloat16 and out.shape == w.shape


@pytest.mark.parametrize("bits", [0, 1, 5, 8, 4.0, "4", True])
def test_bad_bits_named(bits):
    with pytest.raises(ValueError, match="bits"):
        quant.quantize(torch.randn(4, 32), bits=bits, group_size=32)


@pytest.mark.parametrize("group_size", [0, -32, 48, 100, 4, 1, 64.0])
def test_bad_group_size_named(group_size):
    with pytest.raises(ValueError, match="group_size"):
        quant.quantize(torch.randn(4, 32), bits=4, group_size=group_size)


@pytest.mark.parametrize("shape", [(32,), (2, 4, 32), ()])
def test_non_2d_weight_refused(shape):
    with pytest.raises(ValueError, match="2-D"):
        quant.quantize(torch.randn(shape), 4, 32)


def test_non_finite_weight_refused():
    w = torch.randn(4, 32)
    w[1, 3] = float("nan")
    with pytest.raises(ValueError, match="NaN or inf"):
        quant.quantize(w, 4, 32)
    w[1, 3] = float("inf")
    with pytest.raises(ValueError, match="NaN or inf"):
        quant.quantize(w, 4, 32)


def test_integer_weight_refused():
    with pytest.raises(ValueError, match="float"):
        quant.quantize(torch.ones(4, 32, dtype=torch.int32), 4, 32)


def test_fp16_scale_overflow_refused():
    w = torch.tensor([[-1e6, 1e6] * 16])
    with pytest.raises(ValueError, match="float16"):
        quant.quantize(w, 4, 32, scale_dtype=torch.float16)


def test_constant_group_has_positive_scale():
    w = torch.zeros(2, 32)
    q, s, z = quant.quantize(w, 4, 32)
    assert (s > 0).all()
    assert torch.equal(quant.dequantize(q, s, z, 32), w)


@pytest.mark.parametrize("ratio", [0.0, -0.5, float("nan")])
def test_bad_clip_ratio(ratio):
    with pytest.raises(ValueError, match="clip_ratio"):
        quant.quantize(torch.randn(2, 32), 4, 32, clip_ratio=ratio)
