"""What torch.compile makes of a quantized Linear on a GPU, replayed on a machine without one.

    python benchmarks/compile_replay.py        # no GPU needed; run it without TRITON_INTERPRET

``torch.compile(fullgraph=True)`` accepts fake CUDA tensors made inside a ``FakeTensorMode``. With a
stand-in for Triton's active driver (it only names an sm_90 target, for the TTIR that torch reads to
find a kernel's mutated arguments), Dynamo's fake propagation and AOTAutograd's trace of the
``triton_op`` run here as they do on an H200; Inductor's code generation and CUDA graphs do not (they
need the device). The case is gpu_check's module check: a 768 x 1024 g64 Linear called at M = 1, 3, 16,
200, 16, 1, in bf16 with a pre-scale and in fp16, with the device's kept split-K counters present (a
real tensor, as eager CUDA weights make it), and each family of configs forced as gpu_check forces
them (``gpu_check.FORCED_PLAIN``, ``FORCED_FUSED``, ``FORCED_WGMMA``; the M = 1 picks with their L2 prefetch,
so its inline assembly is traced too). One line per family and dtype:

    <family> <dtype> <every output shape right> [(kernel calls, opaque-op calls) per graph, ...]

Dynamo compiles a graph for M = 1 and, from the second size on, one for every M. Both failed GPU compile
checks reproduce with the code they ran (``tests/test_kernel_configs.py`` says which).
"""

from __future__ import annotations

import os

import torch
import triton
from torch._dynamo.backends.common import aot_autograd
from torch._subclasses.fake_tensor import FakeTensorMode
from triton.backends.compiler import GPUTarget

import gpu_check
from awq_ao import AWQInt4Tensor
from awq_ao.kernels import configs, int4_wgmma, splitk

GPU = "NVIDIA H200"
M_VALUES = (1, 3, 16, 200, 16, 1)
FORCED = {"plain": gpu_check.FORCED_PLAIN, "fused": gpu_check.FORCED_FUSED, "wgmma": gpu_check.FORCED_WGMMA}


class _Sm90Driver:
    """What torch asks of Triton's active driver while it traces a kernel call."""

    def get_current_target(self):
        return GPUTarget("cuda", 90, 32)

    def get_active_torch_device(self):
        return torch.device("cuda", 0)


def pretend_h200() -> torch.device:
    """Make this process trace as on an H200 (sm_90, 132 SMs) with its kept tile counters; cuda:0."""
    triton.runtime.driver.set_active(_Sm90Driver())
    configs._device_name = lambda index: GPU
    configs.sm_count = lambda index: 132
    int4_wgmma.capability_major = lambda index: 9
    device = torch.device("cuda", 0)
    splitk._TILE_COUNTERS[device] = torch.zeros(splitk.COUNTER_SLOTS, dtype=torch.int32)
    return device


def fake_linear(device: torch.device, dtype: torch.dtype, pre: bool) -> torch.nn.Linear:
    """A 768 x 1024 g64 int4 Linear of fake tensors on ``device`` (call inside a FakeTensorMode)."""
    lin = torch.nn.Linear(1024, 768, dtype=dtype, device="meta")
    lin.bias = torch.nn.Parameter(torch.empty(768, dtype=dtype, device=device), requires_grad=False)
    weight = AWQInt4Tensor.from_parts(
        torch.empty(768, 512, dtype=torch.uint8, device=device), torch.empty(768, 16, dtype=dtype, device=device),
        torch.empty(768, 16, dtype=torch.uint8, device=device), 4, 64, 1024,
        torch.empty(1024, dtype=dtype, device=device) if pre else None)
    lin.weight = torch.nn.Parameter(weight, requires_grad=False)
    return lin


def replay(device: torch.device, dtype: torch.dtype, pre: bool) -> tuple[bool, list[tuple[int, int]]]:
    """Compile the Linear and call it at M_VALUES; (every output shape right, (kernel calls, opaque calls)
    in each graph AOTAutograd produced)."""
    graphs = []

    def keep(gm, example_inputs):
        graphs.append(gm.code)
        return gm

    torch._dynamo.reset()
    with FakeTensorMode(allow_non_fake_inputs=True), torch.no_grad():
        fn = torch.compile(fake_linear(device, dtype, pre), fullgraph=True, backend=aot_autograd(fw_compiler=keep))
        shapes = [tuple(fn(torch.empty(m, 1024, dtype=dtype, device=device)).shape) for m in M_VALUES]
    calls = [(g.count("triton_kernel_wrapper_functional("), g.count("int4_linear_opaque.default(")) for g in graphs]
    return shapes == [(m, 768) for m in M_VALUES], calls


def main() -> int:
    if os.environ.get("TRITON_INTERPRET") == "1":
        print("compile_replay: run without TRITON_INTERPRET (the interpreter would run the kernels, not trace them)")
        return 2
    device = pretend_h200()
    for family, forced in FORCED.items():
        saved = dict(configs._TUNED)
        for bucket, cfg in forced:
            configs.record(GPU, bucket, 768, 1024, 64, cfg)
        for dtype, pre in ((torch.bfloat16, True), (torch.float16, False)):
            shapes_ok, calls = replay(device, dtype, pre)
            print(family, str(dtype)[6:], shapes_ok, calls, flush=True)
        configs._TUNED.clear()
        configs._TUNED.update(saved)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
