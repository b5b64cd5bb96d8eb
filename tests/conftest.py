"""Shared fixtures. Without a GPU, Triton kernels run under its interpreter.

TRITON_INTERPRET must be set before triton is imported (it is read when a
kernel is decorated), hence at the top of conftest.
"""

import os
import shutil

if not shutil.which("nvidia-smi"):
    os.environ.setdefault("TRITON_INTERPRET", "1")

import pytest  # noqa: E402
import torch  # noqa: E402


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.fixture(autouse=True)
def _fresh_dynamo():
    yield
    torch._dynamo.reset()
