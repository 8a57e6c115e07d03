"""Host helpers of the launchers (no kernels run)."""

import pytest
import triton

from heal_kernels._runtime import cdiv, next_power_of_2


def test_host_cdiv_and_next_power_of_2_give_tritons_values():
    """The launchers size grids, splits and blocks with these instead of triton.cdiv and
    triton.next_power_of_2 (constexpr functions, microseconds per host call): a differing value would
    change a launch, so they must agree with Triton's everywhere the launchers can reach, and beyond."""
    big = [2**k + d for k in range(1, 63) for d in (-1, 0, 1)]
    for x in [*range(-300, 5000), *big]:
        # n <= 0 reaches no launcher; there Triton's own gives 0 and SGLang's replacement (installed on
        # the triton module when sglang.srt.utils is imported, so it depends on test order) gives 1.
        assert next_power_of_2(x) == (triton.next_power_of_2(x) if x >= 1 else 1), x
        for y in (1, 2, 3, 7, 16, 32, 64, 100, 128, 256, 8192, 2**31 - 1):
            assert cdiv(x, y) == triton.cdiv(x, y), (x, y)


def test_host_next_power_of_2_is_sglangs_where_sglang_serves():
    """Under SGLang, triton.next_power_of_2 is SGLang's function: ours must give its values everywhere."""
    common = pytest.importorskip("sglang.srt.utils.common")
    for x in [*range(-300, 5000), *(2**k + d for k in range(1, 63) for d in (-1, 0, 1))]:
        assert next_power_of_2(x) == common.next_power_of_2(x), x
