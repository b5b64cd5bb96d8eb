"""One prepared GPU check: correctness of the CUDA int4 linear, then a timing table.

    python benchmarks/gpu_check.py                  # on a CUDA machine
    TRITON_INTERPRET=1 python benchmarks/gpu_check.py --device cpu --quick   # dry run here

Correctness: fresh random data per case, bf16 and fp16 (fp16/fp32 only under
the interpreter), output poisoned with NaN first, error relative to a float64
reference ``(x * pre) @ dequantize(W).T``; eager op, ``torch.compile(fullgraph=True)``
and, on CUDA, ``mode="reduce-overhead"`` (CUDA graphs). Then median times
(``triton.testing.do_bench``) of the awq_ao op against dense ``F.linear`` for a
few shapes. Exits non-zero when any case fails.
"""

from __future__ import annotations

import argparse
import sys

import torch
import torch.nn.functional as F

import awq_ao  # noqa: F401
from awq_ao import AWQInt4Tensor, quant
from awq_ao.kernels import int4_linear

TOL = {torch.float32: 2e-3, torch.float16: 3e-3, torch.bfloat16: 1.5e-2}


def rel_err(y: torch.Tensor, ref: torch.Tensor) -> float:
    y, ref = y.double().cpu(), ref.double().cpu()
    return ((y - ref).norm() / ref.norm().clamp(min=1e-30)).item()


def check_case(device, dtype, m, n, k, group, with_pre) -> tuple[float, bool]:
    w = torch.randn(n, k, dtype=dtype, device=device)
    pre = (torch.rand(k, device=device) + 0.5).to(dtype) if with_pre else None
    qw = AWQInt4Tensor.from_float(w, 4, group, act_pre_scale=pre)
    x = torch.randn(m, k, dtype=dtype, device=device)
    out = torch.full((m, n), float("nan"), dtype=dtype, device=device)
    int4_linear(x, qw.qdata, qw.scale, qw.zero_point, group, k, act_pre_scale=pre, out=out)
    deq = qw.dequantize(torch.float64)
    ref = (x.double() if pre is None else x.double() * pre.double()) @ deq.t()
    err = rel_err(out, ref)
    return err, bool(torch.isfinite(out).all()) and err < TOL[dtype]


def check_module(device, dtype, mode) -> tuple[float, bool]:
    lin = torch.nn.Linear(512, 384, dtype=dtype, device=device)
    lin.weight = torch.nn.Parameter(AWQInt4Tensor.from_float(lin.weight.detach(), 4, 64), requires_grad=False)
    x = torch.randn(3, 512, dtype=dtype, device=device)
    ref = x.double() @ lin.weight.dequantize(torch.float64).t() + lin.bias.double()
    fn = lin if mode == "eager" else torch.compile(lin, fullgraph=True, mode=None if mode == "compile" else mode)
    with torch.no_grad():
        for _ in range(3):  # warm up (and capture, for CUDA graphs)
            y = fn(x)
    err = rel_err(y, ref)
    return err, err < TOL[dtype]


def timing_table(device) -> list[str]:
    from triton.testing import do_bench

    rows = ["| N x K | M | bf16 F.linear ms | awq_ao int4 ms | speed-up |", "|---|---|---|---|---|"]
    for n, k in [(4096, 4096), (14336, 4096), (4096, 14336), (8192, 8192)]:
        w = torch.randn(n, k, dtype=torch.bfloat16, device=device) * 0.02
        qw = AWQInt4Tensor.from_float(w, 4, 128)
        for m in (1, 16, 128):
            x = torch.randn(m, k, dtype=torch.bfloat16, device=device)
            dense = do_bench(lambda: F.linear(x, w), return_mode="median")
            ours = do_bench(lambda: F.linear(x, qw), return_mode="median")
            rows.append(f"| {n} x {k} | {m} | {dense:.4f} | {ours:.4f} | {dense / ours:.2f}x |")
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--quick", action="store_true", help="small shapes only (for the interpreter)")
    args = parser.parse_args()
    device = args.device
    if device == "cuda" and not torch.cuda.is_available():
        print("error: no CUDA device; for a dry run use TRITON_INTERPRET=1 ... --device cpu --quick")
        return 2
    on_gpu = device == "cuda"
    dtypes = [torch.bfloat16, torch.float16] if on_gpu else [torch.float16, torch.float32]
    shapes = [(1, 48, 80, 16), (5, 64, 130, 32)] if args.quick else [
        (1, 4096, 4096, 128), (7, 1000, 4100, 64), (16, 14336, 4096, 128), (33, 576, 576, 32), (200, 192, 576, 64)]
    if on_gpu:
        print(f"device: {torch.cuda.get_device_name()}, torch {torch.__version__}")
    failures = 0
    print("| dtype | M | N | K | group | pre | rel err | ok |\n|---|---|---|---|---|---|---|---|")
    for dtype in dtypes:
        for m, n, k, group in shapes:
            for with_pre in (False, True):
                err, ok = check_case(device, dtype, m, n, k, group, with_pre)
                failures += not ok
                print(f"| {str(dtype)[6:]} | {m} | {n} | {k} | {group} | {with_pre} | {err:.2e} | {ok} |")
    modes = ["eager", "compile"] + (["reduce-overhead"] if on_gpu else [])
    for dtype in dtypes if on_gpu else []:
        for mode in modes:
            err, ok = check_module(device, dtype, mode)
            failures += not ok
            print(f"module {str(dtype)[6:]} {mode}: rel err {err:.2e} {'ok' if ok else 'FAIL'}")
    if on_gpu:
        print("\n".join(timing_table(device)))
    print(f"{failures} failed")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
