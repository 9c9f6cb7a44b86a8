"""Label assembly: the §6.5 span rules, placement in rows, packed == per-segment, span errors."""

from __future__ import annotations

import pytest

from coordexp.core.coordjson import GeomType, GTObject
from coordexp.core.labels import Segment, assistant_labels, row_labels, target_segment
from coordexp.core.match import MatchConfig
from coordexp.core.parse_records import Rollout
from coordexp.core.target_pipeline import run_target_step
from coordexp.core.target_records import IGNORE, TargetConfig, TargetSample
from coordexp.core.tokens import char_context
from coordexp.errors import TargetError

COORDS = {10: 10, 20: 20}
L1_IDS = [1, 2, 3, 4, 5, 6, 10, 7, 8, 20, 9, 0]
X = IGNORE


def l1_segment(**kw) -> Segment:
    lab = assistant_labels(L1_IDS[5:11], prefix_len=3, coord_id_to_bin=COORDS, prefix_coord=[(1, 123)], **kw)
    return Segment(prompt_len=5, encoded_len=12, labels=lab)


def test_reference_l1_and_l2():
    row = row_labels(L1_IDS, [l1_segment()])
    assert row.labels == (X, X, X, X, X, X, X, X, 8, X, 9, X)
    assert list(zip(row.coord_positions, row.coord_bins, row.coord_is_prefix)) == [(6, 123, True), (9, 20, False)]
    row2 = row_labels(L1_IDS, [l1_segment(tail_ignore=[0, 2])])
    assert row2.labels == (X,) * 12 and row2.coord_positions == (6, 9)


def test_packed_equals_concatenation_and_shifts_coords():
    seg2_ids = [11, 12, 13, 14, 15, 10, 20, 16, 17]
    lab2 = assistant_labels(seg2_ids[4:9], prefix_len=2, coord_id_to_bin=COORDS, prefix_coord=[(1, 999)])
    seg2 = Segment(prompt_len=4, encoded_len=9, labels=lab2)
    packed = row_labels(L1_IDS + seg2_ids, [l1_segment(), seg2])
    alone = row_labels(L1_IDS, [l1_segment()]).labels + row_labels(seg2_ids, [seg2]).labels
    assert packed.labels == alone
    assert packed.coord_positions == (6, 9, 17, 18) and packed.coord_segment == (0, 0, 1, 1)
    assert packed.offsets == (0, 12)


def test_span_errors_name_the_segment():
    with pytest.raises(TargetError, match="prompt tokenization mismatch.*position 3"):
        row_labels(L1_IDS, [attrs_evolve(l1_segment(), rollout_prompt_ids=(1, 2, 3, 9, 5))])
    with pytest.raises(TargetError, match=r"segment 0 .*ends at 12 > 11"):
        row_labels(L1_IDS[:11], [l1_segment()])
    with pytest.raises(TargetError, match="outside the assistant prefix span"):
        assistant_labels(L1_IDS[5:11], prefix_len=3, coord_id_to_bin=COORDS, prefix_coord=[(-1, 5)])
    with pytest.raises(TargetError, match="not a coord token"):
        assistant_labels(L1_IDS[5:11], prefix_len=3, coord_id_to_bin=COORDS, prefix_coord=[(0, 5)])
    with pytest.raises(TargetError, match="differ from the target"):
        row_labels([1, 2, 3, 4, 5, 6, 10, 7, 8, 20, 99, 0], [l1_segment()])


def attrs_evolve(seg: Segment, **kw) -> Segment:
    import attrs

    return attrs.evolve(seg, **kw)


def test_build_target_segments_pack_like_alone():
    ctx = char_context()
    segs, rows = [], []
    for i, text in enumerate(['{"object_1": {"desc": "cat", "bbox_2d": ["<|coord_1|>", "<|coord_2|>", "<|coord_3|>", "<|coord_4|>"]}', "{}"]):
        sample = TargetSample(f"s{i}", (GTObject(1, "dog", GeomType.BBOX, (500, 500, 600, 600)),))
        t = run_target_step(Rollout(tuple(ctx.encode(text))), sample, ctx=ctx, match_cfg=MatchConfig(),
                            target_cfg=TargetConfig()).target
        prompt = (ctx.encode("P")[0],) * (3 + i)
        segs.append(target_segment(t, prompt_len=len(prompt), rollout_prompt_ids=prompt))
        rows.append(prompt + t.y_train_ids)
    packed = row_labels(rows[0] + rows[1], segs)
    assert packed.labels == row_labels(rows[0], [segs[0]]).labels + row_labels(rows[1], [segs[1]]).labels
    eos = [p for p, lab in enumerate(packed.labels) if lab == ctx.im_end_id]
    assert eos == [len(rows[0]) - 1, len(rows[0]) + len(rows[1]) - 1]
