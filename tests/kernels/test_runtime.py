"""Host helpers of the launchers (no kernels run)."""

import triton

from heal_kernels._runtime import cdiv, next_power_of_2


def test_host_cdiv_and_next_power_of_2_give_tritons_values():
    """The launchers size grids, splits and blocks with these instead of triton.cdiv and
    triton.next_power_of_2 (constexpr functions, microseconds per host call): a differing value would
    change a launch, so they must agree with Triton's everywhere the launchers can reach, and beyond."""
    big = [2**k + d for k in range(1, 63) for d in (-1, 0, 1)]
    for x in [*range(-300, 5000), *big]:
        assert next_power_of_2(x) == triton.next_power_of_2(x), x
        for y in (1, 2, 3, 7, 16, 32, 64, 100, 128, 256, 8192, 2**31 - 1):
            assert cdiv(x, y) == triton.cdiv(x, y), (x, y)
