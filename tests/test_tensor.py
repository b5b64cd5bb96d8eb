"""AWQInt4Tensor: linear semantics, tensor ops, the CPU dispatch, torch.compile."""

import pytest
import torch
import torch.nn.functional as F
from helpers import rel_err
from torch.profiler import ProfilerActivity, profile

from awq_ao import AWQInt4Tensor, ops, quant

# stated tolerances for F.linear(x, w) against F.linear(x * pre, w.dequantize()), relative L2
TOL = {torch.float32: 1e-5, torch.float16: 2e-3, torch.bfloat16: 1.5e-2}
CPU_KERNEL = "aten::_weight_int4pack_mm_for_cpu"


def make_weight(n=64, k=100, dtype=torch.float32, bits=4, group_size=32, pre=False):
    w = torch.randn(n, k, dtype=dtype)
    act_pre_scale = (torch.rand(k) + 0.5).to(dtype) if pre else None
    return AWQInt4Tensor.from_float(w, bits, group_size, act_pre_scale=act_pre_scale)


def reference_linear(x, qw, bias=None):
    x_scaled = x if qw.act_pre_scale is None else x * qw.act_pre_scale
    return F.linear(x_scaled, qw.dequantize(), bias)


def kernel_calls(fn) -> int:
    """How many times ``fn()`` ran the CPU int4 kernel."""
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        fn()
    return sum(e.count for e in prof.key_averages() if e.key == CPU_KERNEL)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("x_shape", [(100,), (1, 100), (5, 100), (2, 3, 100), (40, 100)])
@pytest.mark.parametrize("pre", [False, True])
@pytest.mark.parametrize("with_bias", [False, True])
def test_linear_matches_dequantized(dtype, x_shape, pre, with_bias):
    qw = make_weight(dtype=dtype, pre=pre)
    x = torch.randn(x_shape, dtype=dtype)
    bias = torch.randn(64, dtype=dtype) if with_bias else None
    y = F.linear(x, qw, bias)
    assert y.shape == (*x_shape[:-1], 64) and y.dtype == dtype
    assert rel_err(y, reference_linear(x, qw, bias)) < TOL[dtype]
    assert rel_err(torch.ops.aten.linear.default(x, qw, bias), y) < TOL[dtype]


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_mm_and_addmm_with_transposed_weight(dtype):
    qw = make_weight(dtype=dtype, pre=True)
    x = torch.randn(3, 100, dtype=dtype)
    bias = torch.randn(64, dtype=dtype)
    wt = qw.t()
    assert wt.shape == (100, 64) and wt.transposed
    assert rel_err(torch.mm(x, wt), reference_linear(x, qw)) < TOL[dtype]
    assert rel_err(torch.addmm(bias, x, wt), reference_linear(x, qw, bias)) < TOL[dtype]
    assert torch.equal(wt.dequantize(), qw.dequantize().t())
    with pytest.raises(NotImplementedError, match="transposed"):
        torch.mm(torch.randn(3, 64, dtype=dtype), qw)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("m", [1, 4, 33])
def test_compiled_linear_matches_eager(dtype, m):
    lin = torch.nn.Linear(100, 64, dtype=dtype)
    lin.weight = torch.nn.Parameter(make_weight(dtype=dtype, pre=True), requires_grad=False)
    x = torch.randn(2, m, 100, dtype=dtype)
    compiled = torch.compile(lin, fullgraph=True)
    with torch.no_grad():
        y = compiled(x)
        assert rel_err(y, reference_linear(x, lin.weight, lin.bias)) < TOL[dtype]
        assert rel_err(y, lin(x)) < TOL[dtype]


def test_dequantize_is_logical_weight_without_pre_scale():
    w = torch.randn(32, 72)
    pre = torch.rand(72) + 0.5
    qw = AWQInt4Tensor.from_float(w, 4, 32, act_pre_scale=pre)
    q, s, z = quant.quantize(w, 4, 32)
    assert qw.shape == (32, 72) and qw.dtype == torch.float32
    assert torch.equal(qw.dequantize(), quant.dequantize(q, s, z, 32, 72))
    assert torch.equal(qw.act_pre_scale, pre)


@pytest.mark.parametrize("pre", [False, True])
def test_effective_weight_is_what_the_linear_multiplies_by(pre):
    qw = make_weight(dtype=torch.float32, pre=pre)
    x = torch.randn(3, 100)
    assert rel_err(F.linear(x, qw.effective_weight()), F.linear(x, qw)) < 1e-5
    assert torch.equal(qw.t().effective_weight(), qw.effective_weight().t())
    assert qw.effective_weight(torch.bfloat16).dtype == torch.bfloat16
    if not pre:
        assert torch.equal(qw.effective_weight(), qw.dequantize())


def test_to_dtype_detach_clone_copy_and_repr():
    qw = make_weight(dtype=torch.float32, pre=True)
    bf = qw.to(torch.bfloat16)
    assert isinstance(bf, AWQInt4Tensor) and bf.dtype == torch.bfloat16
    assert bf.scale.dtype == bf.act_pre_scale.dtype == torch.bfloat16
    assert bf.cpu_packed is not None and qw.cpu_packed is None  # kernel layout only where used
    assert torch.equal(bf.qdata, qw.qdata)
    assert torch.equal(qw.detach().qdata, qw.qdata) and isinstance(qw.detach(), AWQInt4Tensor)
    cl = qw.clone()
    assert cl.qdata.data_ptr() != qw.qdata.data_ptr() and torch.equal(cl.dequantize(), qw.dequantize())
    other = make_weight(dtype=torch.float32, pre=True)
    other.copy_(qw)
    assert torch.equal(other.dequantize(), qw.dequantize())
    assert torch.equal(other.act_pre_scale, qw.act_pre_scale)
    with pytest.raises(ValueError, match="mismatched"):
        make_weight(dtype=torch.float32, pre=False).copy_(qw)
    text = repr(bf)
    for part in ("AWQInt4Tensor", "shape=(64, 100)", "bits=4", "group_size=32", "bfloat16", "cpu-int4pack"):
        assert part in text


def test_copy_rebuilds_cpu_kernel_layout():
    a = make_weight(dtype=torch.bfloat16)
    b = make_weight(dtype=torch.bfloat16)
    x = torch.randn(1, 100, dtype=torch.bfloat16)
    a.copy_(b)
    assert torch.equal(F.linear(x, a), F.linear(x, b))


def test_module_to_moves_quantized_weight():
    lin = torch.nn.Linear(100, 64)
    lin.weight = torch.nn.Parameter(make_weight(), requires_grad=False)
    lin.to(torch.bfloat16)
    assert isinstance(lin.weight, AWQInt4Tensor) and lin.weight.dtype == torch.bfloat16
    x = torch.randn(2, 100, dtype=torch.bfloat16)
    assert rel_err(lin(x), reference_linear(x, lin.weight, lin.bias)) < TOL[torch.bfloat16]


def test_wrong_input_refused():
    qw = make_weight()
    with pytest.raises(ValueError, match="features"):
        F.linear(torch.randn(2, 99), qw)
    with pytest.raises(ValueError, match="dtype"):
        F.linear(torch.randn(2, 100, dtype=torch.bfloat16), qw)


def test_bad_act_pre_scale_refused():
    with pytest.raises(ValueError, match="act_pre_scale"):
        AWQInt4Tensor.from_float(torch.randn(16, 32), 4, 32, act_pre_scale=torch.ones(31))
    with pytest.raises(ValueError, match="act_pre_scale"):
        AWQInt4Tensor.from_float(torch.randn(16, 32), 4, 32, act_pre_scale=torch.zeros(32))


# ---------------------------------------------------------------- CPU dispatch
@pytest.mark.parametrize(
    "n,k,group_size,dtype,m,expected",
    [
        (64, 100, 32, torch.bfloat16, 1, True),   # K padded to 128 for the kernel
        (64, 576, 64, torch.bfloat16, ops.CPU_INT4_MAX_M, True),
        (64, 576, 64, torch.bfloat16, ops.CPU_INT4_MAX_M + 1, False),  # prefill: dequant + dense
        (64, 100, 32, torch.float32, 1, False),   # fp32: the kernel is slow there
        (64, 100, 32, torch.float16, 1, False),
        (72, 100, 32, torch.bfloat16, 1, False),  # N % 16 != 0
        (64, 128, 16, torch.bfloat16, 1, False),  # group size the kernel lacks
    ],
)
def test_cpu_fast_path_taken_where_expected(n, k, group_size, dtype, m, expected):
    qw = AWQInt4Tensor.from_float(torch.randn(n, k, dtype=dtype), 4, group_size,
                                  act_pre_scale=(torch.rand(k) + 0.5).to(dtype))
    x = torch.randn(m, k, dtype=dtype)
    assert ops.cpu_fast_path_applies(x, qw) is expected
    assert kernel_calls(lambda: F.linear(x, qw)) == int(expected)
    assert rel_err(F.linear(x, qw), reference_linear(x, qw)) < TOL[dtype]


def test_cpu_fast_path_taken_under_compile():
    lin = torch.nn.Linear(576, 192, bias=False, dtype=torch.bfloat16)
    lin.weight = torch.nn.Parameter(
        AWQInt4Tensor.from_float(lin.weight.detach(), 4, 64), requires_grad=False)
    compiled = torch.compile(lin, fullgraph=True)
    x = torch.randn(1, 1, 576, dtype=torch.bfloat16)
    with torch.no_grad():
        compiled(x)  # compile outside the profiled region
        assert kernel_calls(lambda: compiled(x)) == 1
        assert rel_err(compiled(x), reference_linear(x, lin.weight)) < TOL[torch.bfloat16]


@pytest.mark.parametrize("bits", [2, 3])
def test_low_bits_through_cpu_kernel(bits):
    qw = AWQInt4Tensor.from_float(torch.randn(32, 128, dtype=torch.bfloat16), bits, 64)
    x = torch.randn(1, 128, dtype=torch.bfloat16)
    assert kernel_calls(lambda: F.linear(x, qw)) == 1
    assert rel_err(F.linear(x, qw), reference_linear(x, qw)) < TOL[torch.bfloat16]


def test_compile_cache_key_follows_dispatch(monkeypatch):
    """A stale AOT-autograd cache entry must not survive a dispatch change."""
    qw = make_weight(dtype=torch.bfloat16)
    before = qw._stable_hash_for_caching()
    assert before == make_weight(dtype=torch.bfloat16)._stable_hash_for_caching()
    monkeypatch.setattr(ops, "CPU_INT4_MAX_M", ops.CPU_INT4_MAX_M + 1)
    assert qw._stable_hash_for_caching() != before
    assert make_weight(dtype=torch.bfloat16, pre=True)._stable_hash_for_caching() != before
