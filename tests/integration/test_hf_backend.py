"""The hf rollout backend on the tiny Qwen3-VL: batching, decoding modes, stop rules per row, live weights."""

from __future__ import annotations

import copy

import attrs
import pytest
import torch

from coordexp.backends import build_backend
from coordexp.backends.protocol import DecodingConfig, RolloutRequest
from coordexp.config.schema_model import TunerConfig
from coordexp.core.coordjson import GeomType, GTObject, serialize
from coordexp.core.parse import parse
from coordexp.core.repeat import StopRule, StopRules, StopRulesConfig, apply_stop_rules
from coordexp.core.tokens import TokenContext
from coordexp.data.tiny import PROMPT, build_tiny_qwen3vl, tiny_samples
from coordexp.errors import RolloutError
from coordexp.learn.encode import encode_prompt
from coordexp.learn.model import load_model

GREEDY = DecodingConfig(
    decode_mode="greedy", num_beams=1, num_return_sequences=1, temperature=0.0, top_p=1.0, top_k=-1,
    repetition_penalty=1.0, max_new_tokens=24, decode_batch_size=4,
)  # fmt: skip
NO_RULES = StopRulesConfig(
    enabled=False, min_new_tokens=0, max_consecutive_token_repeats=0, ngram_size=0, ngram_repeats=2,
    max_object_keys=None, duplicate_object=False, duplicate_iou_threshold=0.9, duplicate_same_desc=True,
)  # fmt: skip


@pytest.fixture(scope="module")
def tiny():
    return build_tiny_qwen3vl(seed=0)


@pytest.fixture(scope="module")
def ctx(tiny):
    return TokenContext.from_hf(tiny.processor.tokenizer, name="fixture-bpe")


def _requests(processor, n: int, seed: int = 0) -> list[RolloutRequest]:
    out = []
    for j, (img, _) in enumerate(tiny_samples(n, seed=seed)):
        messages = [{"role": "user", "content": [{"type": "image", "image": img}, {"type": "text", "text": PROMPT}]}]
        enc = encode_prompt(processor, messages)
        out.append(RolloutRequest(f"s{seed}-{j}", tuple(enc.input_ids.tolist()), enc, (img,)))
    return out


def _backend(model, processor, ctx, decoding=GREEDY, rules=NO_RULES):
    return build_backend("hf", model=model, processor=processor, ctx=ctx, decoding=decoding, stop_rules=rules)


def _ids(results) -> list[tuple[int, ...]]:
    return [r.rollout.completion_ids for r in results]


def test_left_padded_batches_give_the_unbatched_greedy_completions(tiny, ctx):
    """RM-DECODE-104 and RM-DECODE-105: chunking changes nothing; ids come back as generated."""
    reqs = _requests(tiny.processor, 4)
    assert len({len(r.prompt_ids) for r in reqs}) > 1  # prompts of different lengths really get padded
    alone = [_ids(_backend(tiny.model, tiny.processor, ctx).generate([r]))[0] for r in reqs]
    for size in (3, 4):
        batched = _backend(tiny.model, tiny.processor, ctx, attrs.evolve(GREEDY, decode_batch_size=size)).generate(reqs)
        assert _ids(batched) == alone
    results = _backend(tiny.model, tiny.processor, ctx).generate(reqs)
    for req, res in zip(reqs, results):
        assert res.rollout.sample_id == req.sample_id and res.rollout.prompt_ids == req.prompt_ids
        assert res.new_tokens == len(res.rollout.completion_ids) <= GREEDY.max_new_tokens
        assert res.rollout.finish_reason in ("stop", "length") and res.stop_rule is None
        assert ctx.im_end_id not in res.rollout.completion_ids[:-1]


def test_beam_search_returns_exactly_one_completion_per_sample(tiny, ctx):
    """RM-DECODE-103."""
    reqs = _requests(tiny.processor, 3)
    beam = attrs.evolve(GREEDY, decode_mode="beam", num_beams=3, num_return_sequences=3, decode_batch_size=2,
                        max_new_tokens=12)  # fmt: skip
    results = _backend(tiny.model, tiny.processor, ctx, beam).generate(reqs)
    assert [r.rollout.sample_id for r in results] == [r.sample_id for r in reqs]
    best_only = _backend(tiny.model, tiny.processor, ctx, attrs.evolve(beam, num_return_sequences=1)).generate(reqs)
    assert _ids(results) == _ids(best_only)  # the highest-scoring of 3 returned beams is HF's best beam
    greedy = _backend(tiny.model, tiny.processor, ctx, attrs.evolve(GREEDY, max_new_tokens=12)).generate(reqs)
    assert _ids(results) != _ids(greedy)  # beams really searched


def test_sampling_is_reproducible_from_the_callers_seed_only(tiny, ctx):
    reqs = _requests(tiny.processor, 2)
    sampling = attrs.evolve(GREEDY, decode_mode="sampling", temperature=1.0, top_p=0.9, top_k=50)
    backend = _backend(tiny.model, tiny.processor, ctx, sampling)
    torch.manual_seed(123)
    expected_draw = torch.rand(1)
    torch.manual_seed(123)
    a = backend.generate(reqs, seed=7)
    assert torch.equal(torch.rand(1), expected_draw)  # the caller's stream is untouched
    assert _ids(backend.generate(reqs, seed=7)) == _ids(a)
    assert _ids(backend.generate(reqs, seed=8)) != _ids(a)
    with pytest.raises(RolloutError, match="needs a seed"):
        backend.generate(reqs)


def test_stop_rules_stop_rows_individually_and_equal_the_final_cut(tiny, ctx):
    reqs = _requests(tiny.processor, 4)
    rules = attrs.evolve(NO_RULES, enabled=True, max_consecutive_token_repeats=3)
    free = _backend(tiny.model, tiny.processor, ctx).generate(reqs)
    stopped = _backend(tiny.model, tiny.processor, ctx, rules=rules).generate(reqs)
    final_cut = [apply_stop_rules(r.rollout.completion_ids, rules=StopRules(rules, ctx)) for r in free]
    assert _ids(stopped) == [tuple(o.ids) for o in final_cut]
    fired = [r.stop_rule for r in stopped]
    assert StopRule.CONSECUTIVE_REPEAT.value in fired and None in fired, fired
    for f, s in zip(free, stopped):
        if s.stop_rule is None:
            assert s.rollout == f.rollout  # a row whose rule never fired is exactly the free rollout
        else:
            assert s.rollout.finish_reason == "stop_rule" and s.rollout.completion_ids[-1] == ctx.im_end_id
            assert len(s.rollout.completion_ids) <= len(f.rollout.completion_ids) + 1


def test_lora_model_generates_with_its_current_weights_and_keeps_train_mode(ctx):
    torch.manual_seed(0)
    loaded = load_model("tiny", dtype="float32", tuner_cfg=TunerConfig(lora_rank=8, lora_alpha=16, lora_dropout=0.0),
                        attn_impl="sdpa")  # fmt: skip
    model, processor = loaded.model, loaded.processor
    reqs = _requests(processor, 2)
    backend = _backend(model, processor, ctx)
    model.train()
    before = _ids(backend.generate(reqs))  # fresh LoRA: lora_B is zero, so this is the base model
    assert model.training
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(0.0, 0.5)
    after = _ids(backend.generate(reqs))
    assert after != before
    merged = copy.deepcopy(model).merge_and_unload()
    assert _ids(_backend(merged, processor, ctx).generate(reqs)) == after
    assert all(p.grad is None for p in model.parameters())


@pytest.mark.slow
def test_object_rules_on_the_rollouts_of_a_model_that_learned_an_answer(tiny, ctx):
    """A tiny model trained to answer with 5 objects (object_2 repeats object_1): capped at 2 objects it
    stops after exactly 2; with the duplicate rule it stops when object_2 closes."""
    from coordexp.config.schema_training import TrainingConfig
    from coordexp.learn.encode import encode_teacher_forced, gt_segment
    from coordexp.learn.learner import Learner
    from coordexp.learn.losses import CoordLossConfig
    from coordexp.learn.packed import pack_segments

    model = copy.deepcopy(tiny.model)
    req = _requests(tiny.processor, 1)[0]
    boxes = [("cat", (100, 100, 300, 300)), ("cat", (101, 100, 301, 300)), ("dog", (500, 500, 700, 700)),
             ("cup", (10, 800, 90, 990)), ("red car", (600, 50, 990, 300))]  # fmt: skip
    answer = serialize([GTObject(i, d, GeomType.BBOX, b) for i, (d, b) in enumerate(boxes, 1)])
    messages = [{"role": "user", "content": [{"type": "image", "image": req.images[0]}, {"type": "text", "text": PROMPT}]}]
    y = [*ctx.encode(answer), ctx.im_end_id]
    seg = gt_segment(encode_teacher_forced(tiny.processor, messages, y), coord_id_to_bin=ctx.coord_id_to_bin, key="a")
    coord = CoordLossConfig(sigma=1.0, truncate=4.0, temperature=1.0, soft_ce_weight=1.0, w1_weight=0.0, gate_weight=1.0)
    training = TrainingConfig(learning_rate=3e-2, lr_scheduler_type="constant", gradient_checkpointing=False, bf16=False)
    learner = Learner(model, training=training, coord_cfg=coord, coord_ids=ctx.coord_ids, total_steps=200)
    pack = pack_segments([seg], model=model)
    decoding = attrs.evolve(GREEDY, max_new_tokens=len(y) + 5)
    for _ in range(200):
        learner.step([pack])
        if _ids(_backend(model, tiny.processor, ctx, decoding).generate([req]))[0] == tuple(y):
            break
    assert _ids(_backend(model, tiny.processor, ctx, decoding).generate([req]))[0] == tuple(y), "did not learn"
    capped = _backend(model, tiny.processor, ctx, decoding, attrs.evolve(NO_RULES, enabled=True, max_object_keys=2))
    res = capped.generate([req])[0]
    parsed = parse(res.rollout, ctx=ctx)
    assert res.stop_rule == "max_object_keys" and parsed.valid == (1, 2) and not parsed.truncated
    dup = attrs.evolve(NO_RULES, enabled=True, duplicate_object=True)
    res = _backend(model, tiny.processor, ctx, decoding, dup).generate([req])[0]
    parsed = parse(res.rollout, ctx=ctx)
    assert res.stop_rule == "duplicate_object" and parsed.valid == (1, 2) and not parsed.truncated
    # BPE fuses object_2's close with the separator ("]},): the forced "}" follows the comma
    assert ctx.text_of(res.rollout.completion_ids).endswith('"]},}<|im_end|>')
