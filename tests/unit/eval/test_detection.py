"""Detection metrics from real parse/match/target records; best-checkpoint selection."""

from __future__ import annotations

import math
import random

import numpy as np
import pytest

from coordexp.core.parse import parse as parse_rollout
from coordexp.core.parse_records import Rollout
from coordexp.core.tokens import char_context
from coordexp.data.tokenizer import fixture_tokenizer_path, load_token_context
from coordexp.errors import ConfigError
from coordexp.eval.detection import (
    best_metric_key,
    eval_metrics,
    invalid_coord_slots,
    is_better,
    is_invalid_rollout,
    max_desc_duplicates,
    percentile,
    rollout_metrics,
)
from coordexp.spec.runners._samples import Pipeline
from coordexp.telemetry.keys import REGISTRY
from coordexp.telemetry.window import MetricWindow

PIPE = Pipeline("rollout_matching_sft")
A, B = [100, 100, 200, 200], [300, 300, 400, 400]


def _outcome(sample, train=True):
    return PIPE.outcome(sample, index=0, train=train)


def test_percentile_is_numpy_linear():
    rng = random.Random(0)
    for n in (1, 2, 7, 50):
        xs = [rng.randint(0, 4000) for _ in range(n)]
        for q in (50, 90, 99):
            assert percentile(xs, q) == pytest.approx(float(np.percentile(xs, q)))
    assert percentile([], 90) == 0.0


def test_a_stop_rule_cut_is_not_a_truncation():
    cut = {"pred": [{"desc": "a", "bbox_2d": A}], "cut": '"object_2": {"desc": "b', "gt": []}
    assert _outcome(cut).truncated
    assert not _outcome({**cut, "stop_rule": "duplicate_object"}).truncated


@pytest.mark.parametrize(("text", "invalid"), [
    ("{}", False), ("hello", True), ('{"object_1": {"desc": "a", "bbox_2d": [', True),
    ('{"object_1": {"desc": "a"}}', False),  # a complete answer of dropped objects is drops, not invalid
])
def test_invalid_rollout(text, invalid):
    assert is_invalid_rollout(_outcome({"text": text}).parse) is invalid


SLOTS = ('{"object_1": {"desc": "a", "bbox_2d": ["<|coord_1|>", "720", "%s", " Country"]}, '
         '"object_2": {"desc": "b", "poly": [["<|coord_1|>", "<|coord_2|>"], ["3", "<|coord_4|>"], '
         '["<|coord_1000|>", "<|coord_6|>"]]}, "object_3": {"desc": "c", "bbox_2d": ["<|coord_1|>", "9')


@pytest.mark.parametrize(("tokenizer", "word"), [("char", "\u00e9t\u00e9"), ("fixture-bpe", "\u5c3c\u65af")])
def test_invalid_coord_slots_reads_the_dropped_objects_geometry(tokenizer, word):
    # byte-level BPE splits the CJK word into byte tokens: spans are bytes, not characters
    ctx = char_context() if tokenizer == "char" else load_token_context(fixture_tokenizer_path())
    parse = parse_rollout(Rollout(tuple(ctx.encode(SLOTS % word))), ctx=ctx)
    assert len(parse.dropped) == 3 and not parse.valid_objects
    assert invalid_coord_slots(parse, ctx=ctx) == 3 + 2 + 1  # coord_1000 is out of range


def test_max_desc_duplicates_normalizes_case():
    preds = [{"desc": d, "bbox_2d": A} for d in ("Flagpole", "flagpole", "tree", "FLAGPOLE")]
    assert max_desc_duplicates(_outcome({"pred": preds}).parse) == 3
    assert max_desc_duplicates(_outcome({"text": "{}"}).parse) == 0


def test_rollout_metrics_of_a_step():
    outcomes = [
        _outcome({"pred": [{"desc": "a", "bbox_2d": A}, {"desc": "b", "bbox_2d": [800, 800, 900, 900]}],
                  "gt": [{"desc": "a", "bbox_2d": A}, {"desc": "c", "bbox_2d": B}], "completion_len": 40,
                  "prompt_len": 100, "finish_reason": "length"}),
        _outcome({"text": "{}", "gt": [], "completion_len": 10, "prompt_len": 80, "decode_mode": "beam"}),
    ]
    m = rollout_metrics(outcomes, ctx=PIPE.ctx)
    assert {k: m[k] for k in ("rollout/samples", "rollout/valid_pred_objects", "rollout/gt_objects",
                              "rollout/matched_for_supervision", "rollout/fp", "rollout/fn", "rollout/fn_appended",
                              "rollout/decode_beam_count", "rollout/budget_exhausted", "rollout/targets",
                              "rollout/gen_new_tokens_total", "rollout/generated_sequences")} == {
        "rollout/samples": 2, "rollout/valid_pred_objects": 2, "rollout/gt_objects": 2,
        "rollout/matched_for_supervision": 1, "rollout/fp": 1, "rollout/fn": 1, "rollout/fn_appended": 1,
        "rollout/decode_beam_count": 1, "rollout/budget_exhausted": 1, "rollout/targets": 2,
        "rollout/gen_new_tokens_total": 50, "rollout/generated_sequences": 2}
    assert all(not REGISTRY.get(k).derived for k in m)
    w = MetricWindow(variant="rollout_matching_sft")
    w.add(m, 0)
    rec = w.reduce()
    assert rec["rollout/prompt_len_mean"] == 90 and rec["rollout/f1"] == 0.5
    assert rec["rollout/gen_new_tokens_mean"] == 25 and rec["rollout/budget_exhausted_rate"] == 0.5


def test_buffer_reuse_steps_report_no_generation():
    m = rollout_metrics([_outcome({"text": "{}", "gt": []})], ctx=PIPE.ctx, generated=False)
    assert not any(k.startswith(("rollout/gen_", "rollout/generated", "rollout/budget")) for k in m)
    assert rollout_metrics([], ctx=PIPE.ctx) == {} and eval_metrics([], ctx=PIPE.ctx) == {}


def test_eval_counts_hungarian_pairs_and_samples_without_gt():
    outcomes = [_outcome({"pred": [{"desc": "a", "bbox_2d": A}], "gt": [{"desc": "a", "bbox_2d": A}]}, train=False),
                _outcome({"pred": [{"desc": "b", "bbox_2d": B}, {"desc": "c", "bbox_2d": A}], "gt": []}, train=False)]
    m = eval_metrics(outcomes, ctx=PIPE.ctx)
    assert (m["eval_rollout/matched"], m["eval_rollout/fp"], m["eval_rollout/fn"], m["eval_rollout/gt_objects"]) == (
        1, 2, 0, 1)
    assert m["eval_rollout/samples_with_match"] == 1 and m["eval_rollout/samples_with_valid_pred"] == 2


def test_best_checkpoint_selection():
    assert best_metric_key("rollout/f1") == best_metric_key("eval_rollout/f1") == "eval_rollout/f1"
    with pytest.raises(ConfigError, match="training.metric_for_best_model: 'rollout/token_acc'"):
        best_metric_key("rollout/token_acc")
    with pytest.raises(ConfigError):
        best_metric_key("eval_rollout/matched_iou_sum")  # a helper, never logged
    assert is_better("rollout/f1", 0.1, None, True)
    assert not is_better("rollout/f1", math.nan, None, True)
    assert is_better("rollout/parse_truncated_rate", 0.1, 0.2, False)
    assert not is_better("rollout/f1", 0.2, 0.2, True)
