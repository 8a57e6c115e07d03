"""Benchmarks run on the GPU only (`make bench`); on a CPU machine they are skipped."""

import pytest
import torch


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="benchmarks need a CUDA GPU")
    for item in items:
        item.add_marker(skip)


@pytest.fixture(scope="session")
def ceilings():
    """Measured ceilings of this GPU: device copy bandwidth and FP16/BF16 tensor-core rate."""
    from bench.timing import measure_ceilings

    return measure_ceilings()
