"""``python -m coordexp.bench learn``: packed vs padded forward+backward on mixed-length segments.

The same segments (tiny Qwen3-VL or Qwen2.5-VL, images of different sizes, answers of 0..N objects)
are trained two ways: packed into padding-free rows of at most ``--pack-len`` tokens (selected with
the core packing selector), and as right-padded batches of ``--batch`` segments. Reported: seconds per
pass over all segments, the ratio packed/padded (< 1 means packing is faster), the padding share of
the padded batches, the max abs difference between the two step losses (token-weighted over all
segments; it should be float noise), and the packs' fill ratios with the selector's gain over
FIFO-greedy packing (total tokens of the selected packs / what FIFO would have put in them).
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from coordexp.core.pack import Pack, PackBuffer, SegmentRef, drain, insert
from coordexp.data.tiny import BUILDERS, tiny_segments
from coordexp.learn.learner import backward_packs
from coordexp.learn.losses import CoordLossConfig
from coordexp.learn.model import coord_ids_tensor, coord_token_ids
from coordexp.learn.packed import TrainBatch, pack_segments, pad_segments

COORD = CoordLossConfig(sigma=2.0, truncate=16.0, temperature=1.0, soft_ce_weight=1.0, w1_weight=1.0, gate_weight=1.0)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--family", choices=sorted(BUILDERS), default="qwen3_vl")
    p.add_argument("--attn", choices=("sdpa", "eager"), default="sdpa")
    p.add_argument("--segments", type=int, default=32, help="segments per pass (default 32)")
    p.add_argument("--pack-len", type=int, default=1024, help="packing_length in tokens (default 1024)")
    p.add_argument("--batch", type=int, default=4, help="segments per padded batch (default 4)")
    p.add_argument("--rounds", type=int, default=5, help="timed passes per layout (default 5)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=0, help="torch intra-op threads; 0 = torch's default")


def _packs(segments, cap: int) -> tuple[Pack, ...]:
    buffer = insert(
        PackBuffer(capacity=len(segments), cap=cap, min_fill_ratio=0.5),
        [SegmentRef(s.key, s.length) for s in segments],
    )
    return drain(buffer)


def _packed_batches(segments, packs: tuple[Pack, ...], model) -> list[TrainBatch]:
    by_key = {s.key: s for s in segments}
    return [pack_segments([by_key[r.key] for r in p.segments], model=model) for p in packs]


def _pack_report(packs: tuple[Pack, ...]) -> str:
    fills = [p.fill for p in packs]
    chosen, fifo = sum(p.total_len for p in packs), sum(p.fifo_total for p in packs)
    return (
        f"  packs : fill mean {statistics.mean(fills):.3f} min {min(fills):.3f} max {max(fills):.3f}; "
        f"selected {chosen} tokens vs FIFO-greedy {fifo} in the same packs (gain {chosen / fifo:.3f}x)"
    )


def _one_pass(model, batches, coord_ids) -> float:
    """Forward+backward of every batch with step-level normalisation; returns the step loss."""
    return backward_packs(model, batches, coord_ids=coord_ids, coord_cfg=COORD)


def _time(model, layouts, coord_ids, rounds: int) -> tuple[list[list[float]], list[float]]:
    """Seconds per pass for each layout, rounds interleaved so that machine load hits both alike."""
    losses = [_one_pass(model, batches, coord_ids) for batches in layouts]  # warm-up
    times: list[list[float]] = [[] for _ in layouts]
    for _ in range(rounds):
        for i, batches in enumerate(layouts):
            t0 = time.perf_counter()
            _one_pass(model, batches, coord_ids)
            times[i].append(time.perf_counter() - t0)
    return times, losses


def main(args: argparse.Namespace) -> int:
    if args.threads:
        torch.set_num_threads(args.threads)
    tiny = BUILDERS[args.family](seed=args.seed)
    model, proc = tiny.model, tiny.processor
    model.set_attn_implementation(args.attn)
    model.train()
    coord_ids = coord_ids_tensor(coord_token_ids(proc.tokenizer))
    segments = tiny_segments(proc, args.segments, seed=args.seed, prefix_len=20)
    packs = _packs(segments, args.pack_len)
    packed = _packed_batches(segments, packs, model)
    padded = [
        pad_segments(segments[i : i + args.batch], pad_token_id=proc.tokenizer.pad_token_id)
        for i in range(0, len(segments), args.batch)
    ]
    real = sum(s.length for s in segments)
    padded_tokens = sum(b.inputs["input_ids"].numel() for b in padded)
    (t_packed, t_padded), (loss_packed, loss_padded) = _time(model, [packed, padded], coord_ids, args.rounds)
    mp, md = statistics.median(t_packed), statistics.median(t_padded)
    print(
        f"learn: {args.family}/{args.attn} torch {torch.__version__} threads {torch.get_num_threads()}, "
        f"{len(segments)} segments, {real} tokens (lengths {min(s.length for s in segments)}..{max(s.length for s in segments)})"
    )
    print(f"  packed: {len(packed)} rows <= {args.pack_len} tokens, median {mp * 1000:.1f} ms/pass")
    print(_pack_report(packs))
    print(
        f"  padded: {len(padded)} batches of {args.batch}, {padded_tokens} tokens "
        f"({100 * (1 - real / padded_tokens):.0f}% padding), median {md * 1000:.1f} ms/pass"
    )
    print(f"  ratio packed/padded = {mp / md:.2f}; step loss packed {loss_packed:.6f} padded {loss_padded:.6f}, "
          f"max abs diff {abs(loss_packed - loss_padded):.2e}")
    return 0
