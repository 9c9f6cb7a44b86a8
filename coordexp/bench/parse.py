"""``python -m coordexp.bench parse``: Parse cost per dense rollout.

Dense means what a crowded image produces: 60 objects with LVIS-like descriptions (one to four
words, some rare and long), bboxes in random order, ending with ``<|im_end|>``. Rollouts are made
with the CoordJSON serializer from a seeded generator, encoded once (not timed), then parsed.
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import time
import warnings

from coordexp.cli import count
from coordexp.core.coordjson import GeomType, GTObject, serialize
from coordexp.core.tokens import IM_END, TokenContext, char_context
from coordexp.errors import TokenizerError

# A spread of LVIS-style category names: short, multi-word, and long rare ones.
_DESCS = (
    "person", "car", "chair", "book", "bottle", "cup", "dining table", "traffic light", "handbag",
    "umbrella", "potted plant", "cell phone", "teddy bear", "baseball glove", "fire hydrant",
    "wine glass", "sailboat", "parking meter", "hair dryer", "toothbrush", "stop sign", "skateboard",
    "frisbee", "banana", "broccoli", "tennis racket", "motorcycle", "bicycle", "surfboard", "kite",
    "refrigerator", "suitcase", "necktie", "vase", "scissors", "clock", "remote control",
    "bulletproof vest", "lawn mower", "water jug", "bamboo steamer", "checkerboard", "crab (animal)",
)


def dense_rollout_texts(n_samples: int, n_objects: int, seed: int) -> list[str]:
    """Deterministic rollout texts (answer + ``<|im_end|>``)."""
    rng = random.Random(seed)
    out = []
    for _ in range(n_samples):
        objects = []
        for i in range(n_objects):
            x1, x2 = sorted(rng.randrange(1000) for _ in range(2))
            y1, y2 = sorted(rng.randrange(1000) for _ in range(2))
            objects.append(GTObject(i + 1, rng.choice(_DESCS), GeomType.BBOX, (x1, y1, x2, y2)))
        out.append(serialize(objects) + IM_END)
    return out


def bench_context(choice: str) -> tuple[str, TokenContext]:
    """(label, context): the fixture BPE tokenizer, or char when asked or when the fixture is absent."""
    if choice == "char":
        return "char", char_context()
    try:
        from coordexp.data.tokenizer import fixture_tokenizer_path, load_token_context

        return "fixture-bpe", load_token_context(fixture_tokenizer_path())
    except (TokenizerError, ImportError) as exc:
        warnings.warn(f"fixture tokenizer unavailable ({exc}); benchmarking with the char tokenizer", stacklevel=2)
        return "char", char_context()


def measure(ctx: TokenContext, texts: list[str], rounds: int) -> list[float]:
    """Seconds per parse call, one entry per (round, sample)."""
    from coordexp.core.parse import Rollout, parse

    rollouts = [Rollout(tuple(ctx.encode(t))) for t in texts]
    for r in rollouts[:5]:  # warm-up: regex compilation, first-call costs
        parse(r, ctx=ctx)
    times = []
    for _ in range(rounds):
        for r in rollouts:
            t0 = time.perf_counter()
            parse(r, ctx=ctx)
            times.append(time.perf_counter() - t0)
    return times


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--samples", type=count(1), default=200, help="distinct rollouts (default 200)")
    p.add_argument("--objects", type=count(1), default=60, help="objects per rollout (default 60)")
    p.add_argument("--rounds", type=count(1), default=5, help="passes over all rollouts (default 5)")
    p.add_argument("--seed", type=count(0), default=0)
    p.add_argument("--tokenizer", choices=("fixture", "char"), default="fixture")


def main(args: argparse.Namespace) -> int:
    label, ctx = bench_context(args.tokenizer)
    texts = dense_rollout_texts(args.samples, args.objects, args.seed)
    n_tokens = statistics.mean(len(ctx.encode(t)) for t in texts[:20])
    ms = sorted(t * 1000 for t in measure(ctx, texts, args.rounds))
    p50, p90 = ms[len(ms) // 2], ms[int(len(ms) * 0.9)]
    mean = statistics.fmean(ms)
    print(f"parse: tokenizer={label} objects={args.objects} ~{n_tokens:.0f} tokens/rollout, {len(ms)} parses")
    print(f"  mean {mean:.3f} ms  p50 {p50:.3f} ms  p90 {p90:.3f} ms  ->  {1000 / mean:.0f} samples/s")
    sys.stdout.flush()
    return 0
