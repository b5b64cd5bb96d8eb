"""Triton kernels of awq_ao, imported as ``awq_ao.kernels`` (never as a bare ``kernels``).

* ``int4_gemv.py``: split-K GEMV on CUDA cores (M == 1 and 2 by default);
* ``int4_gemm.py``: tensor-core GEMM with fused dequantization (split-K for small M);
* ``int4_wgmma.py``: the Gluon GEMM for sm_90, the unpacked weight as wgmma's register operand (M <= 64);
* ``int4_gemv_staged.py``: the Gluon GEMV for M = 1 and 2 with its activation staged in shared memory (sm_90);
* ``pdl.py``: programmatic dependent launch; ``ptx.py``: whether a launch runs PTX (inline assembly);
* ``splitk.py``: adding split-K partials (a second launch, or the last program of
  each output tile on the device's kept tile counters);
* ``configs.py``: launch configurations, tuned tables (``tuned/*.json``) and ``tune``;
* ``int4_matmul.py``: the launcher that picks a config by M and runs them.
"""

from awq_ao.kernels.configs import KernelConfig, load_tuned, save_tuned, select_config, tune
from awq_ao.kernels.int4_matmul import int4_linear, launch_int4_linear

__all__ = [
    "KernelConfig", "int4_linear", "launch_int4_linear", "load_tuned", "save_tuned", "select_config", "tune",
]
