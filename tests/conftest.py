"""Test set-up: without a GPU every kernel runs under the Triton interpreter.

TRITON_INTERPRET must be set before triton is imported, so this runs first.
`make test` sets it explicitly; `make test-gpu` leaves it unset and needs CUDA.
"""

import os

import torch

if "TRITON_INTERPRET" not in os.environ and not torch.cuda.is_available():
    os.environ["TRITON_INTERPRET"] = "1"

import pytest  # noqa: E402

from heal_kernels._runtime import is_interpret  # noqa: E402

ON_GPU = torch.cuda.is_available() and not is_interpret()


def pytest_collection_modifyitems(config, items):
    skip_gpu = pytest.mark.skip(reason="needs a CUDA GPU without TRITON_INTERPRET (make test-gpu)")
    for item in items:
        if "gpu" in item.keywords and not ON_GPU:
            item.add_marker(skip_gpu)


@pytest.fixture
def device() -> str:
    return "cuda" if ON_GPU else "cpu"
