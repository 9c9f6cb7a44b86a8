"""Properties of BuildTarget over generated rollouts (char and fixture BPE tokenizers)."""

from __future__ import annotations

import json

from hypothesis import given, settings
from hypothesis import strategies as st

from coordexp.core.coordjson import GeomType, GTObject
from coordexp.core.labels import IGNORE_INDEX
from coordexp.core.parse_records import Rollout
from coordexp.core.target import token_kinds
from coordexp.core.target_pipeline import run_target_step
from coordexp.core.target_records import TargetSample
from coordexp.core.tokens import char_context
from coordexp.data.tokenizer import fixture_tokenizer_path, load_token_context
from tests.records import ab_target, match_cfg, policy_cfg, sft_target

CONTEXTS = {"char": char_context(), "bpe": load_token_context(fixture_tokenizer_path())}
DESCS = ["cat", "dog bed", "person", "traffic light"]

boxes = st.tuples(st.integers(0, 900), st.integers(0, 900), st.integers(5, 99), st.integers(5, 99)).map(
    lambda b: (b[0], b[1], b[0] + b[2], b[1] + b[3])
)
gts = st.lists(st.tuples(st.sampled_from(DESCS), boxes), max_size=5)


def entry(n: int, desc: str, box: tuple[int, ...], broken: str | None) -> str:
    coords = [f'"<|coord_{v}|>"' for v in box]
    if broken == "arity":
        coords = coords[:3]
    elif broken == "int":
        coords = [str(v) for v in box]
    return f'"object_{n}": {{"desc": "{desc}", "bbox_2d": [{", ".join(coords)}]}}'


@st.composite
def samples(draw):
    gt = draw(gts)
    objects = [(d, b) for d, b in gt if draw(st.booleans())]  # some GT are predicted
    objects += draw(st.lists(st.tuples(st.sampled_from(DESCS), boxes), max_size=3))  # FP
    objects = draw(st.permutations(objects))
    entries = [entry(i, d, b, draw(st.sampled_from([None, None, None, "arity", "int"]))) for i, (d, b) in enumerate(objects, 1)]
    text = "{" + ", ".join(entries) + draw(st.sampled_from(["}", "", ', "object_9": {"desc": "x', "}<|im_end|>junk"]))
    return gt, text


configs = st.sampled_from([sft_target(), ab_target(fn_desc_ce_weight=0.5, drop_invalid_struct_ce_multiplier=2.0),
                           sft_target(closure_supervision=False)])
policies = st.sampled_from([policy_cfg(p) for p in ("keep", "cut_at_first_invalid", "cut_at_first_duplicate")])


@settings(max_examples=120, deadline=None)
@given(samples(), st.sampled_from(sorted(CONTEXTS)), configs, policies)
def test_target_invariants(sample, tok, cfg, policy):
    gt, text = sample
    ctx = CONTEXTS[tok]
    target_sample = TargetSample("h", tuple(GTObject(i, d, GeomType.BBOX, b) for i, (d, b) in enumerate(gt, 1)))
    trace = run_target_step(Rollout(tuple(ctx.encode(text))), target_sample, ctx=ctx, match_cfg=match_cfg(),
                            target_cfg=cfg, policy_cfg=policy)
    t, pr = trace.target, trace.view.parse
    # every GT index exactly once: supervised through the prefix, or appended
    assert sorted(t.matched_gt_indices + t.fn_gt_indices) == list(range(len(gt)))
    # Y_train = prefix + append + EOS, and the text before the EOS is one valid JSON answer
    assert ctx.text_of(t.y_train_ids) == pr.prefix_text + t.append_text + "<|im_end|>"
    assert isinstance(json.loads(pr.prefix_text + t.append_text), dict)
    assert t.y_train_ids[: t.prefix_len] == pr.prefix_ids
    # coord targets only at coord tokens; tail coord targets are the tokens' own bins
    for pos, b, pre in zip(t.coord_positions, t.coord_target_bins, t.coord_is_prefix):
        assert t.y_train_ids[pos] in ctx.coord_id_to_bin and t.labels[pos] == IGNORE_INDEX
        assert pre == (pos < t.prefix_len)
        if not pre:
            assert ctx.coord_id_to_bin[t.y_train_ids[pos]] == b
    # prefix CE only on tokens overlapping a matched entry ('"object_N"' key quote to value end)
    matched = {p for p, _ in trace.match.matched_pairs}
    allowed = [(pr.prefix_text.rfind(f'"{o.key}"', 0, o.value_span[0]), o.value_span[1])
               for i, o in enumerate(pr.valid_objects) if i in matched]
    starts = [len(ctx.text_of(t.y_train_ids[:p])) for p in range(t.prefix_len + 1)]
    for p in range(t.prefix_len):
        if t.labels[p] != IGNORE_INDEX:
            assert cfg.matched_prefix_structure_ce
            assert any(s < starts[p + 1] and starts[p] < e for s, e in allowed)
    # the EOS closes the target and is supervised iff closure supervision is on
    assert t.y_train_ids[-1] == ctx.im_end_id and t.closure_positions[1] == t.train_len - 1
    assert (t.labels[-1] == ctx.im_end_id) == cfg.closure_supervision
    kinds = token_kinds(t)
    assert all(k in ("prefix", "prefix_ce", "coord_target") for k in kinds[: t.prefix_len])
