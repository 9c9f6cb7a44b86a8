"""Curve families and health flags from logged records (built here, so every value is known)."""

from __future__ import annotations

import math

from coordexp.report import curves
from coordexp.report.page import Level
from coordexp.telemetry.sinks import LogRecord


def _records():
    return [
        LogRecord("train", 10, {"loss": 2.0, "loss/ce": 1.5, "loss/coord": 0.5, "rollout/gen_new_tokens_p90": 40.0,
                                "rollout/max_new_tokens": 64.0, "rollout/parse_truncated_rate": 0.0,
                                "guard/alarm/truncation": 0.0}),
        LogRecord("train", 20, {"loss": math.nan, "loss/ce": 1.2, "loss/coord": 0.4, "rollout/gen_new_tokens_p90": 64.0,
                                "rollout/max_new_tokens": 64.0, "rollout/parse_truncated_rate": 0.25,
                                "guard/alarm/truncation": 1.0}),
        LogRecord("eval", 20, {"eval_rollout/f1": 0.5, "eval_rollout/parse_truncated_rate": 0.01}),
        LogRecord("train", 20, {"loss": 1.0, "loss/ce": 0.7, "loss/coord": 0.3, "rollout/gen_new_tokens_p90": 64.0,
                                "rollout/max_new_tokens": 64.0, "rollout/parse_truncated_rate": 0.25,
                                "guard/alarm/truncation": 1.0}),  # a resumed run logged step 20 again: this one wins
        LogRecord("meta", 0, meta={"backend": "hf"}),
    ]


def test_collect_keeps_the_last_record_per_step():
    series = curves.collect(_records())
    assert series[("train", "loss")] == [(10, 2.0), (20, 1.0)]
    assert series[("eval", "eval_rollout/f1")] == [(20, 0.5)]
    assert not any(mode == "meta" for mode, _ in series)


def test_families_draw_every_present_key(tmp_path):
    series = curves.collect(_records())
    by_slug = {f.slug: f for f in curves.FAMILIES}
    path, names = curves.plot_family(by_slug["losses"], series, tmp_path)
    assert path == tmp_path / "losses.png" and names == ["loss", "loss/ce", "loss/coord"]
    _, names = curves.plot_family(by_slug["gen_tokens"], series, tmp_path)
    assert names == ["rollout/gen_new_tokens_p90", "rollout/max_new_tokens (cap)"]
    _, names = curves.plot_family(by_slug["guard"], series, tmp_path)
    assert names == ["guard/alarm/truncation"]
    assert curves.plot_family(by_slug["channel_mix"], series, tmp_path) == (None, [])  # not logged: no plot


def test_loss_terms_that_stay_zero_are_named_not_drawn(tmp_path):
    records = [LogRecord("train", s, {"loss": 1.0 / s, "loss/ce": 0.5, "loss/bbox_ciou": 0.0}) for s in (1, 2)]
    series = curves.collect(records)
    losses = next(f for f in curves.FAMILIES if f.slug == "losses")
    assert curves.always_zero(losses, series) == ["loss/bbox_ciou"]
    assert curves.plot_family(losses, series, tmp_path)[1] == ["loss", "loss/ce"]


def test_flags_follow_the_seed_ranges():
    flags = curves.flags(curves.collect(_records()))
    texts = {(slug, level): text for slug, level, text in flags}
    assert "step(s) 20" in texts[("gen_tokens", Level.BAD)]
    assert "rollout/parse_truncated_rate above 0.05 at step(s) 20" in texts[("truncation", Level.WARN)]
    assert "guard/alarm/truncation fired at step(s) 20" in texts[("guard", Level.WARN)]
    assert not any("eval_rollout/parse_truncated_rate" in t for _, _, t in flags)  # 0.01 is healthy
    assert not any(slug == "values" for slug, _, _ in flags)  # the NaN was replaced by the resumed record
    nan = curves.flags(curves.collect(_records()[:2]))
    assert any(slug == "values" and "train loss is not finite at step(s) 20" in t for slug, _, t in nan)
