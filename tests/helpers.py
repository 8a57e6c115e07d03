"""Shared test helpers (imported by the test modules; conftest holds the fixtures)."""

import torch

# The batch sizes every op is checked at: op(x[:k]) == op(x)[:k] bitwise.
BATCH_SIZES = (1, 2, 3, 16, 64, 255, 4097)


def poisoned(shape, device) -> torch.Tensor:
    """A float32 output buffer full of NaN: any element a kernel fails to write stays NaN."""
    return torch.full(shape, float("nan"), dtype=torch.float32, device=device)


def assert_rows_invariant(op, x: torch.Tensor, sizes=BATCH_SIZES) -> None:
    """op on the first k rows alone equals the first k rows of op on all of x, bitwise."""
    full = op(x)
    full = full if isinstance(full, tuple) else (full,)
    for k in sizes:
        if k > x.shape[0]:
            continue
        part = op(x[:k])
        part = part if isinstance(part, tuple) else (part,)
        for a, b in zip(part, full, strict=True):
            assert torch.equal(a, b[:k]), f"rows of a batch of {k} differ from the same rows in a batch of {x.shape[0]}"


def names_argument(name: str) -> str:
    """A pattern matching `name` as a whole word of an error message: "x" is not found in "expected"."""
    import re

    return rf"(?<![\w.]){re.escape(name)}(?!\w)"
