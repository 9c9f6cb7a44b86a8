"""Monitor dumps: every monitor_dump knob changes what is written, and a dump shows the whole story of a sample."""

from __future__ import annotations

import json

import attrs
import pytest
from PIL import Image

from coordexp.config.schema_rollout import MonitorDumpConfig
from coordexp.core.match import match
from coordexp.core.parse import parse
from coordexp.core.parse_records import Rollout
from coordexp.core.prefix_policy import apply_prefix_policy
from coordexp.core.target import build_target
from coordexp.core.target_pipeline import match_shapes
from coordexp.core.target_records import TargetSample
from coordexp.spec.runners._samples import Pipeline
from coordexp.telemetry.monitor import (
    TRUNCATED,
    MonitorDumper,
    MonitorPolicy,
    MonitorSample,
    summarize_messages,
)


def _policy(tmp_path, **changes):
    cfg = attrs.evolve(MonitorDumpConfig(enabled=True), **changes)
    return MonitorPolicy.from_config(cfg, logging_steps=4, logging_first_step=False, run_dir=tmp_path)


def _sample(text: str = "x" * 50, sample_id: str = "s0") -> MonitorSample:
    return MonitorSample(sample_id=sample_id, messages_summary=(), rollout_text=text, prefix_text=text[:10],
                         target_text=text, gt_objects=(), pred_objects=(), matches=())


def test_disabled_means_no_dumper_and_nulls_follow_the_logging_knobs(tmp_path):
    assert MonitorPolicy.from_config(MonitorDumpConfig(), logging_steps=4, logging_first_step=True,
                                     run_dir=tmp_path) is None
    p = _policy(tmp_path)
    assert (p.every_steps, p.dump_first_step, p.out_dir) == (4, False, tmp_path / "monitor_dumps")
    p = _policy(tmp_path, every_steps=3, dump_first_step=True, out_dir="dumps")
    assert (p.every_steps, p.dump_first_step, p.out_dir) == (3, True, tmp_path / "dumps")
    assert _policy(tmp_path, out_dir=str(tmp_path / "abs")).out_dir == tmp_path / "abs"


def test_which_steps_dump(tmp_path):
    every4 = MonitorDumper(_policy(tmp_path))
    assert [s for s in range(13) if every4.should_dump(s)] == [4, 8, 12]
    first = MonitorDumper(_policy(tmp_path, every_steps=5, dump_first_step=True))
    assert [s for s in range(11) if first.should_dump(s)] == [0, 5, 10]


def test_max_events_caps_dumps_and_survives_a_resume(tmp_path):
    dumper = MonitorDumper(_policy(tmp_path, every_steps=1, max_events=2))
    written = [dumper.dump(s, [_sample()]) for s in (1, 2, 3)]
    assert [len(w) for w in written] == [2, 2, 0]  # json + md, twice, then nothing
    assert not MonitorDumper(_policy(tmp_path, every_steps=1, max_events=2)).should_dump(4)
    unlimited = MonitorDumper(_policy(tmp_path, every_steps=1, max_events=0))
    assert unlimited.should_dump(4) and not unlimited.should_dump(2)  # step 2 is already dumped


def test_only_rank_zero_unless_told_otherwise(tmp_path):
    assert not MonitorDumper(_policy(tmp_path), rank=1).should_dump(4)
    other = MonitorDumper(_policy(tmp_path, only_world_process_zero=False), rank=1)
    files = other.dump(4, [_sample()])
    assert [f.name for f in files] == ["step_000004.rank1.json", "step_000004.rank1.md"]


def test_samples_texts_and_markdown_knobs(tmp_path):
    dumper = MonitorDumper(_policy(tmp_path, max_samples=2, max_text_chars=20, write_markdown=False))
    files = dumper.dump(4, [_sample(sample_id=f"s{i}") for i in range(3)], meta={"rollout_backend": "hf"}, epoch=0.5)
    assert [f.name for f in files] == ["step_000004.json"]
    payload = json.loads(files[0].read_text())
    assert [s["sample_id"] for s in payload["samples"]] == ["s0", "s1"]
    assert payload["samples"][0]["rollout_text"] == "x" * 20 + TRUNCATED
    assert payload["samples"][0]["prefix_text"] == "x" * 10
    assert (payload["global_step"], payload["epoch"], payload["meta"]) == (4, 0.5, {"rollout_backend": "hf"})


def test_messages_show_image_path_and_size_not_pixels(tmp_path):
    img = Image.new("RGB", (64, 48))
    messages = [{"role": "system", "content": "be precise"},
                {"role": "user", "content": [{"type": "image", "image": img}, {"type": "text", "text": "find"}]}]
    summary = summarize_messages(messages, [tmp_path / "a.jpg"])
    assert summary[1].parts[0].image == str(tmp_path / "a.jpg") and (summary[1].parts[0].width,
                                                                      summary[1].parts[0].height) == (64, 48)
    assert summarize_messages(messages, [img])[1].parts[0].image == "(in-memory image)"
    dumper = MonitorDumper(_policy(tmp_path, every_steps=1))
    sample = attrs.evolve(_sample(), messages_summary=summary)
    text = dumper.dump(1, [sample])[0].read_text()
    assert "a.jpg" in text and "be precise" in text and len(text) < 3000


def test_a_dump_from_real_records(tmp_path):
    pipe = Pipeline("rollout_matching_sft")
    text = ('{"object_1": {"desc": "caf\u00e9", "bbox_2d": ["<|coord_0|>", "<|coord_0|>", "<|coord_100|>", '
            '"<|coord_80|>"]}, "object_2": {"desc": "dog", "bb')
    gt = pipe.gt_of({"gt": [{"desc": "caf\u00e9", "bbox_2d": [0, 0, 100, 100]},
                            {"desc": "dog", "bbox_2d": [500, 500, 600, 600]}]}, "s7")
    parsed = parse(Rollout(tuple(pipe.ctx.encode(text))), ctx=pipe.ctx)
    view = apply_prefix_policy(parsed, ctx=pipe.ctx, cfg=pipe.policy_cfg)
    tsample = TargetSample("s7", gt)
    result = match(*match_shapes(view, tsample), cfg=pipe.match_cfg)
    target = build_target(view, result, tsample, ctx=pipe.ctx, cfg=pipe.target_cfg)
    sample = MonitorSample.from_records(sample_id="s7", messages_summary=(), parse=parsed, view=view, match=result,
                                        gt=gt, ctx=pipe.ctx, target=target)
    assert sample.matches[0].iou == pytest.approx(0.8) and sample.fn_gt_indices == (1,)
    assert sample.target_text.startswith(sample.prefix_text) and '"object_2": {"desc": "dog"' in sample.target_text
    assert sample.stats["recall"] == 0.5 and sample.stats["parse_truncated"] == 1
    files = MonitorDumper(_policy(tmp_path, every_steps=1)).dump(3, [sample])
    raw = files[0].read_text()
    assert raw.isascii() and json.loads(raw)["samples"][0]["pred_objects"][0]["desc"] == "caf\u00e9"
    md = files[1].read_text()
    for title in ("## Meta", "### Rollout (raw)", "### Prefix Used (append-ready)", "### Training Target",
                  "### GT Objects", "### Pred Objects (valid)", "### Match", "### Stats"):
        assert title in md
    assert "pred 0 <-> gt 0: IoU 0.8000" in md and md.isascii()
