"""Programmatic dependent launch (kernels/pdl.py): when it is used, what the launches pass, what the kernels compile to."""

import pytest
import torch

from helpers import KernelRecorder, compiled_in_child

from awq_ao.kernels import KernelConfig, int4_matmul, pdl, splitk

CUDA = torch.device("cuda", 0)


@pytest.fixture
def hopper(monkeypatch):
    """A CUDA device of compute capability 9 as far as pdl.py can tell, PDL not turned off."""
    monkeypatch.setattr(pdl, "_capability_major", lambda index: 9)
    monkeypatch.delenv("AWQ_AO_PDL", raising=False)
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    monkeypatch.setattr(pdl, "ENABLED", True)


def test_pdl_only_for_direct_launches_on_sm90_and_later(hopper, monkeypatch):
    assert pdl.options(CUDA) == {"PDL": 1, "launch_pdl": True}
    assert pdl.options(CUDA, pdl.direct, release=True) == {"PDL": 2, "launch_pdl": True}
    assert pdl.options(CUDA, lambda kernel: kernel, release=True) == {"PDL": 0}  # Inductor's wrap_triton, say
    assert pdl.options(torch.device("cpu")) == {"PDL": 0}
    monkeypatch.setattr(pdl, "_capability_major", lambda index: 8)
    assert not pdl.enabled(CUDA)
    monkeypatch.setattr(pdl, "_capability_major", lambda index: 9)
    monkeypatch.setenv("AWQ_AO_PDL", "0")
    assert not pdl.enabled(CUDA)
    monkeypatch.delenv("AWQ_AO_PDL")
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    assert not pdl.enabled(CUDA)
    monkeypatch.delenv("TRITON_INTERPRET")
    monkeypatch.setattr(pdl, "ENABLED", False)  # what gpu_check.py does when its PDL check fails
    assert pdl.options(CUDA) == {"PDL": 0}


@pytest.mark.parametrize("config", [KernelConfig("gemv", 64, 256, split_k=4, num_warps=2),
                                    KernelConfig("gemv", 64, 256, split_k=4, num_warps=2, fused_reduce=True),
                                    KernelConfig("gemm", 64, 128, split_k=4, block_m=16, swap_ab=True)])
def test_launches_pass_pdl_when_direct_and_not_through_a_wrapper(hopper, monkeypatch, config):
    """Launched directly, every kernel of a call gets Triton's launch_pdl and the PDL constexpr: 2 (wait, then
    release the next launch) where the same call launches another kernel after it (the split kernel before the
    reduce, the GEMM's activation launch before the GEMM), else 1 (wait only: the in-kernel sum, the reduce).
    Through a wrapper (Inductor's) none gets launch_pdl and PDL is 0. (CPU tensors, with ``pdl.enabled`` saying
    yes: the recorders launch nothing.)"""
    monkeypatch.setattr(pdl, "enabled", lambda device: True)
    calls = []
    for module, name in ((int4_matmul, "_int4_gemv_kernel"), (int4_matmul, "_int4_gemm_kernel"),
                         (int4_matmul, "_gemm_x_kernel"), (splitk, "_splitk_reduce_kernel")):
        monkeypatch.setattr(module, name, KernelRecorder(name, calls))
    m = 16 if config.kind == "gemm" else 1
    x = torch.randn(m, 1024, dtype=torch.bfloat16)
    q = torch.zeros(64, 512, dtype=torch.uint8)
    s = torch.ones(64, 8, dtype=torch.bfloat16)
    z = torch.zeros(64, 8, dtype=torch.uint8)
    int4_matmul.launch_int4_linear(x, q, s, z, None, None, 128, 1024, config=config,
                                   counters=torch.zeros(64, dtype=torch.int32))
    levels = [(name, kw.get("PDL"), kw.get("launch_pdl")) for name, kw in calls]
    if config.fused_reduce:
        assert levels == [("_int4_gemv_kernel", 1, True)]
    elif config.kind == "gemv":
        assert levels == [("_int4_gemv_kernel", 2, True), ("_splitk_reduce_kernel", 1, True)]
    else:
        assert levels == [("_gemm_x_kernel", 2, True), ("_int4_gemm_kernel", 2, True),
                          ("_splitk_reduce_kernel", 1, True)]
    calls.clear()
    int4_matmul.launch_int4_linear(x, q, s, z, None, None, 128, 1024, config=config, launcher=lambda kernel: kernel,
                                   counters=torch.zeros(64, dtype=torch.int32))
    assert calls and all(kw.get("PDL") == 0 and "launch_pdl" not in kw for _, kw in calls), calls


def test_kernels_compile_their_pdl_instructions_for_sm90():
    """sm_90 PTX (Triton's own toolchain, no GPU): with PDL each split kernel waits for the kernel ahead and then
    releases the next (griddepcontrol.wait, then launch_dependents), the reduce only waits; without PDL there is
    no griddepcontrol at all."""
    body = """
cfgs = {"gemv": KernelConfig("gemv", 64, 256, split_k=8, num_warps=2),
        "gemm": KernelConfig("gemm", 64, 128, block_m=16, split_k=4, num_warps=4, num_stages=3, swap_ab=True,
                             prefetch=1),
        "staged": KernelConfig("staged", 64, 256, split_k=4, num_warps=2),
        "wgmma": KernelConfig("wgmma", 64, 128, block_m=16, split_k=4, num_warps=4, prefetch=1)}
for on in (False, True):
    r.PDL = 2 if on else 0
    ptx = {k: r.compile_config(c, "bf16", 128, 90).asm["ptx"] for k, c in cfgs.items()}
    ptx["reduce"] = r.compile_reduce(8, "bf16", 90).asm["ptx"]
    for k, text in ptx.items():
        wait, release = text.find("griddepcontrol.wait"), text.find("griddepcontrol.launch_dependents")
        print(on, k, wait >= 0, release >= 0, release > wait)
"""
    lines = compiled_in_child(body, 10)
    rows = {tuple(line.split()[:2]): line.split()[2:] for line in lines}
    for kind in ("gemv", "gemm", "staged", "wgmma"):
        assert rows[("False", kind)] == ["False", "False", "False"], kind
        assert rows[("True", kind)] == ["True", "True", "True"], kind
    assert rows[("False", "reduce")] == ["False", "False", "False"]
    assert rows[("True", "reduce")] == ["True", "False", "False"]


def test_kernels_as_inductor_reemits_them_compile_for_sm90():
    """Under torch.compile, Inductor re-emits a traced triton_op's Triton kernels from their source and the jit
    functions they call (``user_defined_triton_kernel_transitive_closure_source_code``, under ``@triton.jit``) in a
    module of its own,
    which imports triton and tl but none of our modules. Each kernel so re-emitted (written to a file and
    imported, as Inductor does) compiles for sm_90 as Inductor launches it (PDL 0; the GEMV and the GEMM with their L2
    prefetch on): a kernel that calls a helper through a module name (``pdl.prologue``) outside a branch its constexprs
    leave dead fails here."""
    body = """
import importlib.util, os, tempfile
import triton, triton.language as tl
from torch._inductor.codegen.wrapper import user_defined_triton_kernel_transitive_closure_source_code as closure
from awq_ao.kernels import int4_dequant, int4_gemm, int4_gemv, splitk

def reemit(kernel):
    path = os.path.join(tempfile.mkdtemp(), kernel.__name__ + ".py")
    with open(path, "w") as f:
        f.write("import triton\\nimport triton.language as tl\\n\\n@triton.jit\\n" + closure(kernel) + "\\n")
    spec = importlib.util.spec_from_file_location(kernel.__name__, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return getattr(module, kernel.__name__)

r.KERNELS = {"gemv": reemit(int4_gemv._int4_gemv_kernel), "gemm": reemit(int4_gemm._int4_gemm_kernel),
             "dequant": reemit(int4_dequant._int4_dequant_kernel)}
splitk._splitk_reduce_kernel = reemit(splitk._splitk_reduce_kernel)
for name, cfg in (("gemv", KernelConfig("gemv", 64, 256, split_k=8, num_warps=2, l2_prefetch=2)),
                  ("gemv2", KernelConfig("gemv", 64, 256, split_k=8, block_m=2, num_warps=2)),
                  ("gemm", KernelConfig("gemm", 64, 128, block_m=16, split_k=4, num_stages=3, swap_ab=True,
                                        prefetch=1, natural_order=True, l2_prefetch=32)),
                  ("dequant", KernelConfig("dequant", 16, 256))):
    print(name, len(r.compile_config(cfg, "bf16", 128, 90).asm["cubin"]) > 0)
print("reduce", len(r.compile_reduce(8, "bf16", 90).asm["cubin"]) > 0)
"""
    lines = compiled_in_child(body, 5)
    assert lines == ["gemv True", "gemv2 True", "gemm True", "dequant True", "reduce True"]


def test_gpu_check_reports_a_pdl_failure_and_restores_the_switch(monkeypatch):
    """gpu_check.check_pdl (step 0 of the GPU check): a case that raises (a capture refusing the launch, say) is a
    failed line naming the exception, the cases after it still run, and ``pdl.ENABLED`` is left as it was."""
    from helpers import benchmark_module

    check = benchmark_module("gpu_check")
    cases = [(1, KernelConfig("gemv", 64, 256, split_k=8)), (16, KernelConfig("gemm", 64, 128, block_m=16))]
    monkeypatch.setattr(check, "_pdl_cases", lambda device: cases)
    seen = []

    def matches(device, dtype, m, cfg, calls):
        seen.append(m)
        if m == 1:
            raise RuntimeError("operation not permitted when stream is capturing")
        return True

    monkeypatch.setattr(check, "_pdl_matches", matches)
    monkeypatch.setattr(pdl, "ENABLED", True)
    results = check.check_pdl(torch.device("cpu"), torch.bfloat16)
    assert seen == [1, 16] and pdl.ENABLED is True
    (first, ok1), (second, ok2) = results
    assert not ok1 and "RuntimeError: operation not permitted" in first and ok2 and "M=16" in second
