"""The package imports as awq_ao, with the kernels folder as awq_ao.kernels only."""

import importlib.util
import os
import subprocess
import sys


def test_kernels_importable_only_as_awq_ao_kernels(tmp_path):
    import awq_ao.kernels

    assert os.path.basename(os.path.dirname(awq_ao.kernels.__file__)) == "kernels"
    # from an unrelated folder, a bare `kernels` is not ours (it may be another PyPI package)
    code = (
        "import importlib.util, sys\n"
        "spec = importlib.util.find_spec('kernels')\n"
        "print(spec.origin if spec else 'none')\n"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, check=True)
    origin = out.stdout.strip()
    assert origin == "none" or os.path.dirname(awq_ao.kernels.__file__) not in origin


def test_ops_registered_in_awq_ao_namespace():
    import torch

    import awq_ao  # noqa: F401

    assert hasattr(torch.ops.awq_ao, "int4_linear_dequant")
    assert hasattr(torch.ops.awq_ao, "int4_linear_triton")
    assert importlib.util.find_spec("awq_ao.formats") is not None
