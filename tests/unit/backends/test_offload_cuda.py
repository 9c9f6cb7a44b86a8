"""Offload around a colocate rollout phase, on CUDA (BUF-OFFLOAD-002/003): on a CPU-only machine the learner
already lives on the CPU and the phase moves nothing (that part is the spec scenarios' snapshot)."""

from __future__ import annotations

import pytest
import torch

from coordexp.backends.vllm_weights import Offload
from coordexp.errors import RolloutError

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="offload moves tensors off an accelerator")


def _model_and_optimizer() -> tuple[torch.nn.Module, torch.optim.Optimizer]:
    model = torch.nn.Linear(8, 8).cuda()
    opt = torch.optim.Adam(model.parameters(), lr=0.1)
    model(torch.ones(2, 8, device="cuda")).sum().backward()
    opt.step()
    return model, opt


def _devices(model: torch.nn.Module, opt: torch.optim.Optimizer) -> tuple[set[str], set[str]]:
    params = {p.device.type for p in model.parameters()}
    state = {v.device.type for s in opt.state.values() for v in s.values() if torch.is_tensor(v) and v.dim() > 0}
    return params, state


def test_parameters_come_back_even_when_the_phase_fails():
    model, opt = _model_and_optimizer()
    weights = [p.detach().cpu().clone() for p in model.parameters()]
    failure = RolloutError("the rollout failed")
    with pytest.raises(RolloutError) as caught, Offload(model=True, optimizer=False, optimizer_of=lambda: opt).around(model):
        assert _devices(model, opt) == ({"cpu"}, {"cuda"})
        raise failure
    assert caught.value is failure
    assert _devices(model, opt) == ({"cuda"}, {"cuda"})
    assert all(torch.equal(p.detach().cpu(), w) for p, w in zip(model.parameters(), weights, strict=True))


def test_optimizer_state_alone_is_offloaded_and_restored():
    model, opt = _model_and_optimizer()
    with Offload(model=False, optimizer=True, optimizer_of=lambda: opt).around(model):
        assert _devices(model, opt) == ({"cuda"}, {"cpu"})
    assert _devices(model, opt) == ({"cuda"}, {"cuda"})
    opt.step()  # the restored state is usable where the parameters are


def test_every_optimizer_state_tensor_returns_to_its_own_device():
    model, opt = _model_and_optimizer()
    before = [(k, v.device) for s in opt.state.values() for k, v in s.items() if torch.is_tensor(v)]
    with Offload(model=True, optimizer=True, optimizer_of=lambda: opt).around(model):
        pass
    after = [(k, v.device) for s in opt.state.values() for k, v in s.items() if torch.is_tensor(v)]
    assert after == before
