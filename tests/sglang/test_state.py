"""The process's numerics: one frozen object, fixed once, read everywhere."""

import dataclasses

import pytest
import torch

from heal_sglang import state


@pytest.fixture
def fresh():
    prev = state.current()
    state._current = state.STOCK
    yield state
    state._current = prev


def test_numerics_are_fixed_once(fresh, monkeypatch):
    monkeypatch.setenv(state.TP_REDUCE_ENV, "nccl")
    n = state.numerics(state.HEAL, torch.float16, 4)
    assert n == state.Numerics("heal", torch.float16, 4, "nccl")
    state.fix(n)
    assert (state.mode(), state.weight_dtype(), state.row_shards(), state.tp_reduce()) == ("heal", torch.float16, 4,
                                                                                          "nccl")
    state.fix(state.numerics(state.HEAL, torch.float16, 4))  # the same again (a second hook call): fine
    with pytest.raises(RuntimeError, match="already fixed in this process"):
        state.fix(state.numerics(state.LAYERCAST, torch.float16))
    with pytest.raises(dataclasses.FrozenInstanceError):
        state.current().mode = None


def test_bad_numerics_are_refused(monkeypatch):
    with pytest.raises(ValueError, match="unknown heal_sglang mode 'int8'"):
        state.Numerics("int8")
    with pytest.raises(ValueError, match="power of two"):
        state.Numerics("heal", torch.bfloat16, 3)
    monkeypatch.setenv(state.TP_REDUCE_ENV, "tree")
    with pytest.raises(ValueError, match="HEAL_TP_REDUCE='tree'"):
        state.numerics(state.HEAL)


def test_fp32_checkpoints_keep_16_bit_weights():
    assert state.numerics(state.HEAL, torch.float32).weight_dtype == torch.bfloat16
    assert not state.STOCK.mode and state.numerics(None).mode is None
