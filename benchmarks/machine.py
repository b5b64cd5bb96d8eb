"""What a CPU benchmark ran on, for the header of its table: these machines differ from day to day, and the same
script on another CPU (bf16 instructions or not) gives other numbers."""

from __future__ import annotations

import platform

import torch

# the instruction-set extensions that decide torch's CPU speed for bf16 and int8 work
_FLAGS = ("avx512_bf16", "amx_bf16", "amx_int8", "avx512_vnni")


def cpu_description(cpuinfo: str = "/proc/cpuinfo") -> str:
    """e.g. 'AMD EPYC, torch kernels AVX512, avx512_bf16 avx512_vnni, 2 threads'.

    The model name and flags come from ``cpuinfo`` (Linux); elsewhere the model is ``platform.processor()``.
    """
    model, flags = platform.processor() or platform.machine(), set()
    try:
        with open(cpuinfo) as f:
            for line in f:
                key, _, value = line.partition(":")
                if key.strip() == "model name":
                    model = value.strip()
                elif key.strip() == "flags":
                    flags = set(value.split())
                    break
    except OSError:
        pass
    extensions = " ".join(flag for flag in _FLAGS if flag in flags) or "no bf16 / vnni extensions"
    return (f"{model}, torch kernels {torch.backends.cpu.get_cpu_capability()}, {extensions}, "
            f"{torch.get_num_threads()} threads")
