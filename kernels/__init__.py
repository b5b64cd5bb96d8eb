"""Triton kernels of awq_ao, imported as ``awq_ao.kernels`` (never as a bare ``kernels``)."""

from awq_ao.kernels.int4_matmul import int4_linear, launch_int4_linear

__all__ = ["int4_linear", "launch_int4_linear"]
