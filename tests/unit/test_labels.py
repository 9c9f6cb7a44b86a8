"""Label assembly: the §6.5 span rules of one assistant span, and their errors."""

from __future__ import annotations

import pytest

from coordexp.core.coordjson import GeomType, GTObject
from coordexp.core.labels import IGNORE_INDEX, assistant_labels
from coordexp.core.parse_records import Rollout
from coordexp.core.target_pipeline import run_target_step
from coordexp.core.target_records import TargetSample
from coordexp.core.tokens import char_context
from coordexp.errors import TargetError
from tests.records import match_cfg, policy_cfg, sft_target

COORDS = {10: 10, 20: 20}
L1_ASSISTANT = [6, 10, 7, 8, 20, 9]  # reference 14.5 L1 after its 5 prompt tokens: prefix 3, tail 3
X = IGNORE_INDEX


def test_reference_l1_and_l2():
    lab = assistant_labels(L1_ASSISTANT, prefix_len=3, coord_id_to_bin=COORDS, prefix_coord=[(1, 123)])
    assert lab.labels == (X, X, X, 8, X, 9)
    assert list(zip(lab.coord_positions, lab.coord_bins, lab.coord_is_prefix)) == [(1, 123, True), (4, 20, False)]
    masked = assistant_labels(L1_ASSISTANT, prefix_len=3, coord_id_to_bin=COORDS, prefix_coord=[(1, 123)],
                              tail_ignore=[0, 2])
    assert masked.labels == (X,) * 6 and masked.coord_positions == (1, 4)


def test_weights_follow_the_labels():
    lab = assistant_labels(L1_ASSISTANT, prefix_len=3, coord_id_to_bin=COORDS, prefix_ce=[(0, 1.0)],
                           tail_weights=[0.5, 1.0, 2.0])
    assert lab.labels == (6, X, X, 8, X, 9) and lab.weights == (1.0, 0.0, 0.0, 0.5, 0.0, 2.0)


def test_span_errors_name_the_sample_and_position():
    with pytest.raises(TargetError, match="sample q: coord target at assistant position -1 .*prompt"):
        assistant_labels(L1_ASSISTANT, prefix_len=3, coord_id_to_bin=COORDS, prefix_coord=[(-1, 5)], sample_id="q")
    with pytest.raises(TargetError, match="position 0 is not a coord token"):
        assistant_labels(L1_ASSISTANT, prefix_len=3, coord_id_to_bin=COORDS, prefix_coord=[(0, 5)])
    with pytest.raises(TargetError, match="position 1 is a coord token"):
        assistant_labels(L1_ASSISTANT, prefix_len=3, coord_id_to_bin=COORDS, prefix_ce=[(1, 1.0)])
    with pytest.raises(TargetError, match="tail ignore positions"):
        assistant_labels(L1_ASSISTANT, prefix_len=3, coord_id_to_bin=COORDS, tail_ignore=[3])
    with pytest.raises(TargetError, match="leaves no tail"):
        assistant_labels(L1_ASSISTANT, prefix_len=6, coord_id_to_bin=COORDS)
    with pytest.raises(TargetError, match="2 tail weights for a 3-token tail"):
        assistant_labels(L1_ASSISTANT, prefix_len=3, coord_id_to_bin=COORDS, tail_weights=[1.0, 1.0])


def test_build_target_supervises_the_eos_and_nothing_in_the_prefix():
    ctx = char_context()
    text = '{"object_1": {"desc": "cat", "bbox_2d": ["<|coord_1|>", "<|coord_2|>", "<|coord_3|>", "<|coord_4|>"]}'
    sample = TargetSample("s0", (GTObject(1, "dog", GeomType.BBOX, (500, 500, 600, 600)),))
    t = run_target_step(Rollout(tuple(ctx.encode(text))), sample, ctx=ctx, match_cfg=match_cfg(),
                        target_cfg=sft_target(), policy_cfg=policy_cfg()).target
    assert t.labels[-1] == ctx.im_end_id and t.ce_weights[-1] == 1.0
    assert all(v == X for v in t.labels[: t.prefix_len])
