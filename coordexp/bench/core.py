"""``python -m coordexp.bench core``: Parse -> Match -> BuildTarget ms per dense sample.

A dense sample is what a crowded image gives: 60 predicted objects, of which 45 overlap a GT object
(jittered by a few bins, so IoU is high but not 1) and 15 are FP far from every GT, plus 5 GT objects
the model missed (FN, appended). Rollouts are built with the CoordJSON serializer from a seeded
generator and encoded once (not timed). Each stage is timed separately on the same samples, in the
order the step runs them, so the total is the cost the learner pays per Channel-B sample on CPU.

``--vs-legacy`` times Match against the legacy matcher (``coordexp.bench.legacy_match``) side by side
instead: on a small sample (5 predictions, 5 GT) and on the dense one, in exact and raster mode, each
sample run by both matchers back to back so that load on the machine hits both alike.
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import time

from coordexp.bench.parse import _DESCS, bench_context
from coordexp.bind import PRESETS, bind_match, bind_prefix_policy, bind_target, tool_config
from coordexp.cli import count
from coordexp.core.coordjson import GeomType, GTObject, serialize
from coordexp.core.geometry import Shape
from coordexp.core.match import MatchConfig, match
from coordexp.core.parse import parse
from coordexp.core.parse_records import Rollout
from coordexp.core.prefix_policy import PrefixPolicyConfig, apply_prefix_policy
from coordexp.core.target import build_target
from coordexp.core.target_pipeline import match_shapes
from coordexp.core.target_records import TargetConfig, TargetSample
from coordexp.core.tokens import IM_END

STAGES = ("parse", "policy", "match", "target")


def _box(rng: random.Random) -> tuple[int, int, int, int]:
    x1, y1 = rng.randrange(0, 900), rng.randrange(0, 900)
    return (x1, y1, min(999, x1 + rng.randrange(20, 100)), min(999, y1 + rng.randrange(20, 100)))


def _jitter(rng: random.Random, box: tuple[int, ...]) -> tuple[int, ...]:
    return tuple(min(999, max(0, v + rng.randrange(-3, 4))) for v in box)


def dense_sample(rng: random.Random, idx: int, matched: int, fp: int, missed: int) -> tuple[str, TargetSample]:
    """(rollout text, GT sample): ``matched`` jittered GT copies and ``fp`` far boxes, shuffled."""
    gts = [GTObject(i + 1, rng.choice(_DESCS), GeomType.BBOX, _box(rng)) for i in range(matched + missed)]
    preds = [(g.desc, _jitter(rng, g.points)) for g in gts[:matched]]
    # FP boxes live in a strip no GT reaches (x >= 950), so they are never matched.
    preds += [(rng.choice(_DESCS), (950, y, 990, y + 30)) for y in (rng.randrange(0, 960) for _ in range(fp))]
    rng.shuffle(preds)
    objects = [GTObject(i + 1, d, GeomType.BBOX, b) for i, (d, b) in enumerate(preds)]
    gts = [GTObject(g.index, g.desc, g.geom_type, tuple(min(v, 940) if k % 2 == 0 else v for k, v in enumerate(g.points)))
           for g in gts]
    return serialize(objects) + IM_END, TargetSample(f"dense{idx}", tuple(gts))


def measure(
    ctx, samples, rounds: int, cfg: TargetConfig, policy: PrefixPolicyConfig, match_cfg: MatchConfig
) -> dict[str, list[float]]:
    """Seconds per stage call, one entry per (round, sample)."""
    times: dict[str, list[float]] = {s: [] for s in STAGES}
    for r in range(rounds + 1):  # round 0 warms up (first-call costs, lazy scipy import)
        for ids, sample in samples:
            t0 = time.perf_counter()
            parsed = parse(Rollout(ids), ctx=ctx)
            t1 = time.perf_counter()
            view = apply_prefix_policy(parsed, ctx=ctx, cfg=policy, bbox_only=cfg.bbox_only)
            t2 = time.perf_counter()
            preds, gts = match_shapes(view, sample)
            result = match(preds, gts, cfg=match_cfg)
            t3 = time.perf_counter()
            build_target(view, result, sample, ctx=ctx, cfg=cfg)
            t4 = time.perf_counter()
            if r:
                for name, dt in zip(STAGES, (t1 - t0, t2 - t1, t3 - t2, t4 - t3)):
                    times[name].append(dt)
    times["total"] = [sum(v) for v in zip(*(times[s] for s in STAGES))]
    return times


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--samples", type=count(1), default=50, help="distinct dense samples (default 50)")
    p.add_argument("--rounds", type=count(1), default=5, help="passes over all samples (default 5)")
    p.add_argument("--matched", type=count(0), default=45)
    p.add_argument("--fp", type=count(0), default=15)
    p.add_argument("--missed", type=count(0), default=5, help="GT objects without a prediction (FN)")
    p.add_argument("--preset", choices=tuple(PRESETS), default="rollout_matching")
    p.add_argument("--prefix-policy", choices=("keep", "cut_at_first_invalid", "cut_at_first_duplicate"), default="keep")
    p.add_argument("--seed", type=count(0), default=0)
    p.add_argument("--tokenizer", choices=("fixture", "char"), default="fixture")
    p.add_argument("--vs-legacy", action="store_true", help="time Match against the legacy matcher instead")


def _shapes(text: str, sample: TargetSample) -> tuple[list[Shape], list[Shape]]:
    """Match inputs of a generated sample: its predictions (from the serialized text) and GT."""
    import json

    preds = [Shape(GeomType.BBOX, tuple(int(t[8:-2]) for t in v[GeomType.BBOX.value])) for v in json.loads(text[: -len(IM_END)]).values()]
    return preds, [Shape(g.geom_type, g.points) for g in sample.gt]


def compare_legacy(args: argparse.Namespace) -> int:
    """Median ms per Match call, ours vs the legacy matcher, and the ratio of the medians."""
    from coordexp.bench.legacy_match import legacy_match

    rng = random.Random(args.seed)
    for name, (matched, fp, missed) in (("small 5x5", (4, 1, 1)), ("dense", (args.matched, args.fp, args.missed))):
        samples = []
        for i in range(args.samples):
            preds, gts = _shapes(*dense_sample(rng, i, matched, fp, missed))
            plain = ([(s.geom_type.value, s.points) for s in preds], [(s.geom_type.value, s.points) for s in gts])
            samples.append((preds, gts, *plain))
        for mode in ("exact", "raster"):
            cfg = bind_match(tool_config("rollout_matching", iou_mode=mode, prefix_policy="keep"))
            ours, legacy = [], []
            for r in range(args.rounds + 1):  # round 0 warms up
                for preds, gts, lp, lg in samples:
                    t0 = time.perf_counter()
                    match(preds, gts, cfg=cfg)
                    t1 = time.perf_counter()
                    legacy_match(lp, lg, top_k=cfg.candidate_top_k, gate=cfg.maskiou_gate,
                                 resolution=cfg.maskiou_resolution)
                    t2 = time.perf_counter()
                    if r:
                        ours.append(t1 - t0)
                        legacy.append(t2 - t1)
            a, b = statistics.median(ours) * 1000, statistics.median(legacy) * 1000
            print(f"match {name:<9} {mode:<6} ours p50 {a:7.3f} ms  legacy p50 {b:7.3f} ms  ratio {a / b:5.2f}")
    sys.stdout.flush()
    return 0


def main(args: argparse.Namespace) -> int:
    if args.vs_legacy:
        return compare_legacy(args)
    label, ctx = bench_context(args.tokenizer)
    rng = random.Random(args.seed)
    samples = []
    for i in range(args.samples):
        text, sample = dense_sample(rng, i, args.matched, args.fp, args.missed)
        samples.append((tuple(ctx.encode(text)), sample))
    config = tool_config(args.preset, iou_mode="exact", prefix_policy=args.prefix_policy)
    times = measure(ctx, samples, args.rounds, bind_target(config), bind_prefix_policy(config), bind_match(config))
    n_tokens = statistics.mean(len(ids) for ids, _ in samples)
    print(f"core: tokenizer={label} preset={args.preset} policy={args.prefix_policy} "
          f"{args.matched + args.fp} objects ({args.matched} matched, {args.fp} FP, {args.missed} FN), "
          f"~{n_tokens:.0f} tokens/rollout, {len(times['total'])} samples")
    for name in (*STAGES, "total"):
        ms = sorted(t * 1000 for t in times[name])
        print(f"  {name:<7} mean {statistics.fmean(ms):7.3f} ms  p50 {ms[len(ms) // 2]:7.3f} ms  "
              f"p90 {ms[int(len(ms) * 0.9)]:7.3f} ms")
    sys.stdout.flush()
    return 0
