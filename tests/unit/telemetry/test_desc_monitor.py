"""The desc monitor: exact and semantic agreement of matched pairs' descs (reference rollout 11.2)."""

from __future__ import annotations

import math

import pytest

from coordexp.bind import bind_desc_monitor, bind_match, minimal_config
from coordexp.core.coordjson import GTObject
from coordexp.core.desc_agreement import DEFAULT_TRAIN_MAX_PAIRS, normalize_desc, tally
from coordexp.core.geometry import Shape
from coordexp.core.keys import GeomType
from coordexp.core.match import match
from coordexp.errors import ConfigError
from coordexp.telemetry.desc_monitor import DescMonitor, SentenceEncoder
from coordexp.telemetry.step import desc_metrics
from coordexp.telemetry.window import MetricWindow
from tests.unit.telemetry.tiny_encoder import build_tiny_encoder

DM = "custom.extra.rollout_matching.desc_monitor"


def settings(*overrides: str, variant: str = "rollout_matching_sft"):
    return bind_desc_monitor(minimal_config(variant, (f"{DM}.enabled=true", *overrides)))


@pytest.fixture(scope="module")
def encoder_dir(tmp_path_factory):
    return build_tiny_encoder(tmp_path_factory.mktemp("encoder"))


def test_normalization_follows_the_reference_rule():
    assert normalize_desc("  Traffic_Light ") == "traffic light"
    assert normalize_desc("cat/dog (big)") == "cat dog big"
    assert normalize_desc("a \t\n b") == "a b"
    assert normalize_desc(" _() ") == ""


def test_exact_counts_by_construction():
    pairs = [("Cat", "cat"),            # exact after case
             ("traffic_light", "traffic light"),  # exact after the separator rule
             ("dog", "cat"),            # counted, not exact
             ("", "cat"),               # empty pred: not a pair
             ("cat", "  "),             # empty GT: not a pair
             ("person", "person")]      # exact
    t = tally(pairs, cap=None, threshold=0.6)
    assert (t.pairs, t.exact_ok, t.semantic, t.sim_count) == (4, 3, False, 0)
    assert tally(pairs, cap=3, threshold=0.6).pairs == 3  # the first 3 pairs, in match order
    assert tally(pairs, cap=4, threshold=0.6).pairs == 3  # the 4th is dropped as empty after the cap


def test_settings_resolve_every_steps_and_the_pair_cap():
    s = settings("training.logging_steps=5", f"{DM}.every_steps=0", f"{DM}.max_pairs=0")
    assert s.every_steps == 5 and [k for k in range(12) if s.due(k, last_seen=k - 1 if k else None)] == [0, 5, 10]
    assert s.pair_cap(training=True) == DEFAULT_TRAIN_MAX_PAIRS and s.pair_cap(training=False) is None
    s = settings(f"{DM}.every_steps=3", f"{DM}.max_pairs=7")
    assert s.every_steps == 3 and s.pair_cap(training=True) == s.pair_cap(training=False) == 7
    assert not settings(f"{DM}.enabled=false").due(0)


def test_a_multiple_on_a_step_without_rollouts_is_measured_on_the_next_one(tmp_path):
    """Stage-2 AB, B-cold: rollouts only on steps 3, 9, 10, 17, 19; every_steps 5 passes 5, 10, 15."""
    monitor = DescMonitor.build(settings(f"{DM}.mode=exact", f"{DM}.every_steps=5", variant="stage2_ab_training"))
    assert [k for k in (3, 9, 10, 17, 19) if monitor.due(k)] == [3, 9, 10, 17]  # 3: the first rollouts (0 passed)


def test_missing_model_is_a_config_error_naming_the_key(tmp_path):
    s = settings(f"{DM}.mode=both", f"{DM}.semantic_model={tmp_path / 'no-such-model'}")
    with pytest.raises(ConfigError) as err:
        DescMonitor.build(s)
    assert f"{DM}.semantic_model=" in str(err.value) and "no-such-model" in str(err.value)
    assert f"{DM}.mode: exact" in str(err.value)  # the fix


def test_a_folder_without_a_model_is_a_config_error(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigError, match="semantic_model"):
        DescMonitor.build(settings(f"{DM}.semantic_model={tmp_path / 'empty'}"))


def test_exact_mode_needs_no_model_and_logs_no_semantic_keys(tmp_path):
    monitor = DescMonitor.build(settings(f"{DM}.mode=exact", f"{DM}.semantic_model={tmp_path / 'absent'}"))
    assert monitor is not None and monitor.encoder is None
    out = monitor.metrics([("cat", "cat"), ("dog", "cat")], prefix="rollout")
    assert out == {"rollout/desc_pairs_total": 2.0, "rollout/desc_exact_ok": 1.0, "rollout/desc_sem_enabled": 0.0}


def test_disabled_monitor_is_none():
    assert DescMonitor.build(bind_desc_monitor(minimal_config("rollout_matching_sft"))) is None


def test_semantic_path_with_a_real_tiny_encoder(encoder_dir):
    monitor = DescMonitor.build(settings(f"{DM}.semantic_model={encoder_dir}", f"{DM}.semantic_threshold=0.6"))
    enc = monitor.encoder
    pairs = [("Cat", "cat"), ("red square", "blue square"), ("dog", "big yellow traffic light"), ("car", "person")]
    sims = enc.cosine([normalize_desc(p) for p, _ in pairs], [normalize_desc(g) for _, g in pairs])
    assert math.isclose(sims[0], 1.0, abs_tol=1e-5)  # the same normalised text is the same unit vector
    assert all(-1.0 - 1e-6 <= s <= 1.0 + 1e-6 for s in sims) and len(set(round(s, 4) for s in sims[1:])) == 3
    out = monitor.metrics(pairs, prefix="rollout")
    assert out["rollout/desc_pairs_total"] == 4 and out["rollout/desc_exact_ok"] == 1
    assert out["rollout/desc_sem_enabled"] == 1.0 and out["rollout/desc_sem_sim_count"] == 4
    assert math.isclose(out["rollout/desc_sem_sim_sum"], sum(sims), rel_tol=1e-6)
    assert out["rollout/desc_sem_ok"] == 1 + sum(s >= 0.6 for s in sims[1:])
    # the threshold decides: below every cosine all pairs agree; above every non-exact one only the exact pair
    low = tally(pairs, cap=None, threshold=-1.0, similarity=enc.cosine)
    high = tally(pairs, cap=None, threshold=max(sims[1:]) + 1e-4, similarity=enc.cosine)
    assert (low.sem_ok, high.sem_ok) == (4, 1)


def test_pooling_ignores_padding_and_caches(encoder_dir):
    enc = SentenceEncoder(str(encoder_dir), batch_size=8)
    alone = enc.encode(["cat"])[0]
    fresh = SentenceEncoder(str(encoder_dir), batch_size=8)
    padded = fresh.encode(["big yellow traffic light", "cat"])[1]  # "cat" padded to the longer text
    assert float((alone - padded).abs().max()) < 1e-5
    assert set(fresh._cache) == {"big yellow traffic light", "cat"}
    again = fresh.encode(["cat", "cat"])
    assert again.shape[0] == 2 and len(fresh._cache) == 2


def test_step_metrics_from_real_matches_through_the_window():
    """Matched pairs only (FP and FN never count), every_steps gating, the derived accuracy of the window."""
    monitor = DescMonitor.build(settings(f"{DM}.mode=exact", f"{DM}.every_steps=2"))
    cfg = bind_match(minimal_config("rollout_matching_sft"))
    box = (100, 100, 300, 300)
    far = (700, 700, 900, 900)

    def sample(pred_descs, pred_boxes, gt_descs, gt_boxes):
        preds = [GTObject(i + 1, d, GeomType.BBOX, b) for i, (d, b) in enumerate(zip(pred_descs, pred_boxes))]
        gt = [GTObject(i + 1, d, GeomType.BBOX, b) for i, (d, b) in enumerate(zip(gt_descs, gt_boxes))]
        m = match([Shape(o.geom_type, o.points) for o in preds], [Shape(o.geom_type, o.points) for o in gt], cfg=cfg)
        return preds, gt, m

    s1 = sample(["cat", "dog"], [box, far], ["cat", "cat"], [box, far])  # 2 matched pairs, 1 exact
    s2 = sample(["car"], [far], ["car"], [box])  # no overlap: FP + FN, no pair
    assert len(s1[2].matched_pairs) == 2 and not s2[2].matched_pairs
    window = MetricWindow(variant="rollout_matching_sft")
    window.add(desc_metrics(monitor, [s1, s2], step=0), 0)
    assert desc_metrics(monitor, [s1, s2], step=1) == {}  # not due
    window.add(desc_metrics(monitor, [s1], step=2), 2)
    record = window.reduce()
    assert record["rollout/desc_pairs_total"] == 4
    assert record["rollout/desc_exact_acc_on_matched"] == 0.5
    assert "rollout/desc_sem_acc_on_matched" not in record  # exact mode: no semantic key
    assert desc_metrics(None, [s1], step=0) == {}


def test_a_run_with_a_missing_encoder_stops_at_startup_naming_the_key(tmp_path, capsys):
    """Through the training CLI: exit 2, one message naming the key, before any step is logged."""
    import yaml

    from coordexp.run import main
    from tests.integration.conftest import tiny_config

    cfg = tiny_config(tmp_path, training__max_steps=1)
    cfg["custom"]["extra"]["rollout_matching"]["desc_monitor"] = {
        "enabled": True, "mode": "semantic", "semantic_model": str(tmp_path / "missing-encoder")}
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(cfg), encoding="utf-8")
    assert main(["--config", str(path)]) == 2
    err = capsys.readouterr().err
    assert f"{DM}.semantic_model=" in err and "missing-encoder" in err and "Traceback" not in err
    assert not (tmp_path / "out" / "run" / "logging.jsonl").exists()
