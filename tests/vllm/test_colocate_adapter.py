"""Adapter sync (``vllm.sync.mode: adapter``): the engine serves the base weights and each sync pushes the LoRA
adapter as a new LoRA request; its rollouts equal the live (merged-in-place) model's in hf."""

from __future__ import annotations

import pytest
import torch

from coordexp.backends import build_backend
from coordexp.config.schema_model import TunerConfig
from coordexp.core.tokens import TokenContext
from coordexp.learn.model import load_model
from tests.vllm.conftest import tiny_requests
from tests.vllm.test_colocate import GREEDY, RULES, _set_lora_b, _view, vllm_spec


@pytest.fixture(scope="module")
def loaded(servable_dir):
    torch.manual_seed(0)
    return load_model(servable_dir, dtype="float32", attn_impl="sdpa",
                      tuner_cfg=TunerConfig(lora_rank=8, lora_alpha=16, lora_dropout=0.0))  # fmt: skip


def test_adapter_sync_pushes_the_adapter_and_matches_hf(loaded, tmp_path):
    ctx = TokenContext.from_hf(loaded.processor.tokenizer, name="fixture-bpe")
    spec = vllm_spec(enable_lora=True, sync_mode="adapter", sync_fallback_to_full=False, sleep_level=0)
    backend = build_backend("vllm_colocate", model=loaded.model, processor=loaded.processor, ctx=ctx, decoding=GREEDY,
                            stop_rules=RULES, vllm=spec, workdir=tmp_path)  # fmt: skip
    hf = build_backend("hf", model=loaded.model, processor=loaded.processor, ctx=ctx, decoding=GREEDY, stop_rules=RULES)
    requests = tiny_requests(loaded.processor, 4)
    try:
        assert backend.adapter_sync
        base = _view(backend.generate(requests))  # the fresh adapter (lora_B = 0) on the base weights
        assert base == _view(hf.generate(requests))
        _set_lora_b(loaded.model, 0.5)
        backend.sync_weights(loaded.model)
        changed = _view(backend.generate(requests))
        assert changed != base and changed == _view(hf.generate(requests))
        assert backend._lora is not None and len(list(tmp_path.glob("adapter_*"))) == 1
    finally:
        _set_lora_b(loaded.model, None)
        backend.close()
