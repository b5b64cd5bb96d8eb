"""The Triton kernel against the reference in awq_ao/quant.py.

On a machine without a GPU these run under TRITON_INTERPRET=1 (set in
conftest.py) on CPU tensors: fp16 / fp32 only there, small shapes.
"""

import os

import pytest
import torch
from helpers import HAS_CUDA, rel_err

from awq_ao import AWQInt4Tensor, quant
from awq_ao.kernels import int4_linear

DEVICE = "cuda" if HAS_CUDA else "cpu"
INTERPRETED = os.environ.get("TRITON_INTERPRET") == "1"
pytestmark = pytest.mark.skipif(
    not HAS_CUDA and not INTERPRETED, reason="needs a GPU or TRITON_INTERPRET=1"
)
DTYPES = [torch.float16, torch.float32] + ([torch.bfloat16] if HAS_CUDA else [])
TOL = {torch.float32: 2e-3 if HAS_CUDA else 1e-5, torch.float16: 2e-3, torch.bfloat16: 1e-2}


def reference(x, q, s, z, group_size, k, pre):
    """float64: (x * pre) @ dequantize(q, s, z).T"""
    w = quant.dequantize(q, s, z, group_size, k, torch.float64)
    x = x.double() if pre is None else x.double() * pre.double()
    return x @ w.t()


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("m,n,k", [(1, 32, 64), (3, 40, 72), (17, 48, 100), (33, 80, 130)])
@pytest.mark.parametrize("group_size", [32, 64, 128])
@pytest.mark.parametrize("with_pre", [False, True])
def test_kernel_matches_reference(dtype, m, n, k, group_size, with_pre):
    w = torch.randn(n, k)
    q, s, z = quant.quantize(w, 4, group_size, scale_dtype=dtype)
    x = torch.randn(m, k, dtype=dtype, device=DEVICE)
    pre = (torch.rand(k) + 0.5).to(dtype) if with_pre else None
    args = [t.to(DEVICE) for t in (quant.pack_int4(q), s, z)]
    y = int4_linear(x, *args, group_size, k, act_pre_scale=None if pre is None else pre.to(DEVICE))
    assert y.shape == (m, n) and y.dtype == dtype
    assert rel_err(y.cpu(), reference(x.cpu(), q, s, z, group_size, k, pre)) < TOL[dtype]


@pytest.mark.parametrize("bits,group_size", [(2, 8), (3, 16), (4, 256)])
def test_kernel_other_bits_and_groups(bits, group_size):
    w = torch.randn(24, 200)
    q, s, z = quant.quantize(w, bits, group_size, scale_dtype=torch.float16)
    x = torch.randn(5, 200, dtype=torch.float16, device=DEVICE)
    y = int4_linear(x, *[t.to(DEVICE) for t in (quant.pack_int4(q), s, z)], group_size, 200)
    assert rel_err(y.cpu(), reference(x.cpu(), q, s, z, group_size, 200, None)) < TOL[torch.float16]


def test_kernel_writes_every_output():
    w = torch.randn(40, 96)
    q, s, z = quant.quantize(w, 4, 32, scale_dtype=torch.float16)
    x = torch.randn(7, 96, dtype=torch.float16, device=DEVICE)
    out = torch.full((7, 40), float("nan"), dtype=torch.float16, device=DEVICE)
    int4_linear(x, *[t.to(DEVICE) for t in (quant.pack_int4(q), s, z)], 32, 96, out=out)
    assert torch.isfinite(out).all()


def test_triton_op_matches_reference():
    """The torch.library.triton_op wrapper, eager (on CPU tensors it runs interpreted)."""
    qw = AWQInt4Tensor.from_float(torch.randn(48, 80, dtype=torch.float16), 4, 16,
                                  act_pre_scale=torch.rand(80, dtype=torch.float16) + 0.5)
    qw = qw.to(DEVICE)
    x = torch.randn(5, 80, dtype=torch.float16, device=DEVICE)
    y = torch.ops.awq_ao.int4_linear_triton(x, qw.qdata, qw.scale, qw.zero_point, qw.act_pre_scale, 16, 80)
    q = quant.unpack_int4(qw.qdata.cpu())
    expected = reference(x.cpu(), q, qw.scale.cpu(), qw.zero_point.cpu(), 16, 80, qw.act_pre_scale.cpu())
    assert rel_err(y.cpu(), expected) < TOL[torch.float16]


@pytest.mark.skipif(not HAS_CUDA, reason="needs a GPU")
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_cuda_linear_compiled(dtype):
    lin = torch.nn.Linear(256, 128, dtype=dtype, device="cuda")
    lin.weight = torch.nn.Parameter(AWQInt4Tensor.from_float(lin.weight.detach(), 4, 64), requires_grad=False)
    x = torch.randn(4, 256, dtype=dtype, device="cuda")
    expected = torch.nn.functional.linear(x, lin.weight.dequantize(), lin.bias)
    with torch.no_grad():
        assert rel_err(torch.compile(lin, fullgraph=True)(x), expected) < TOL[dtype]


@pytest.mark.skipif(HAS_CUDA, reason="the CUDA run is the real check; this is its dry run")
def test_gpu_check_script_dry_run(monkeypatch):
    """benchmarks/gpu_check.py stays runnable: its correctness half, interpreted on CPU."""
    import importlib.util
    import sys

    path = os.path.join(os.path.dirname(os.path.dirname(__file__)), "benchmarks", "gpu_check.py")
    spec = importlib.util.spec_from_file_location("gpu_check", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    monkeypatch.setattr(sys, "argv", ["gpu_check.py", "--device", "cpu", "--quick"])
    assert module.main() == 0
