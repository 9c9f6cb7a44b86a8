"""``python -m coordexp.bench learn``: packed vs padded forward+backward, at two widths and for long packs.

The same segments (tiny Qwen3-VL or Qwen2.5-VL, images of different sizes, answers of 0..N objects)
are trained three ways in each case:

- ``padded``: right-padded batches of ``--batch`` segments (transformers' sdpa with a padding mask);
- ``packed/sdpa``: padding-free rows of at most the pack length (selected with the core packing
  selector), attention through transformers' sdpa, i.e. a dense L x L block-diagonal mask per row;
- ``packed/<impl>``: the same rows through ``coordexp.learn.attention`` (``--attn``, default
  ``packed``): attention within each segment, no L x L mask.

Cases: ``h32`` the tiny model (hidden 32) on mixed segments and packs of ``--pack-len``; ``h256`` the
same segments on the same model built ``--hidden`` wide; ``long`` that wide model on segments of up
to ``--long-max-len`` tokens in packs of ``--long-pack-len``. Reported per case: seconds per pass over
all segments (median and min of ``--rounds``, rounds interleaved so machine load hits every layout
alike), each packed layout's time over padded (< 1 means packing is faster), the padding share, the largest
step-loss difference between layouts (token-weighted over all segments; float noise), and the packs'
fill ratios with the selector's gain over FIFO-greedy packing.
"""

from __future__ import annotations

import argparse
import statistics
import time

import attrs
import torch

from coordexp.cli import count
from coordexp.core.pack import Pack, PackBuffer, SegmentRef, drain, insert
from coordexp.data.tiny import BUILDERS, HIDDEN
from coordexp.learn.attention import PACKED, PACKED_IMPLS, attn_implementation_for, resolve_kernel
from coordexp.learn.learner import backward_packs
from coordexp.learn.losses import CoordLossConfig
from coordexp.learn.model import coord_ids_tensor, coord_token_ids
from coordexp.learn.packed import TrainBatch, pack_segments, pad_segments
from coordexp.learn.tiny_segments import tiny_segments

COORD = CoordLossConfig(sigma=2.0, truncate=16.0, temperature=1.0, soft_ce_weight=1.0, w1_weight=1.0, gate_weight=1.0)
CASES = ("h32", "h256", "long")
LONG_MAX_OBJECTS = 16  # about 28 tokens per object: answers up to ~450 tokens


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--family", choices=sorted(BUILDERS), default="qwen3_vl")
    p.add_argument("--attn", choices=PACKED_IMPLS, default=PACKED, help="packed attention under test (default packed)")
    p.add_argument("--cases", nargs="+", choices=CASES, default=list(CASES), help="cases to run (default all)")
    p.add_argument("--hidden", type=count(1), default=256, help="width of the larger model (default 256)")
    p.add_argument("--segments", type=count(1), default=32, help="segments per pass (default 32)")
    p.add_argument("--pack-len", type=count(1), default=1024, help="packing length of h32/h256 in tokens (default 1024)")
    p.add_argument("--long-pack-len", type=count(1), default=4096, help="packing length of the long case (default 4096)")
    p.add_argument("--long-max-len", type=count(1), default=512, help="longest segment of the long case (default 512)")
    p.add_argument("--batch", type=count(1), default=4, help="segments per padded batch (default 4)")
    p.add_argument("--rounds", type=count(1), default=5, help="timed passes per layout (default 5)")
    p.add_argument("--seed", type=count(0), default=0)
    p.add_argument("--threads", type=count(0), default=0, help="torch intra-op threads; 0 = torch's default")


@attrs.frozen
class Layout:
    name: str
    attn: str  # attention implementation the model runs this layout with
    batches: list[TrainBatch]


def _packs(segments, cap: int) -> tuple[Pack, ...]:
    buffer = insert(
        PackBuffer(capacity=len(segments), cap=cap, min_fill_ratio=0.5),
        [SegmentRef(s.key, s.length) for s in segments],
    )
    return drain(buffer)


def _packed_batches(segments, packs: tuple[Pack, ...], model, cap: int) -> list[TrainBatch]:
    by_key = {s.key: s for s in segments}
    return [pack_segments([by_key[r.key] for r in p.segments], model=model, cap=cap) for p in packs]


def _pack_report(packs: tuple[Pack, ...]) -> str:
    fills = [p.fill for p in packs]
    chosen, fifo = sum(p.total_len for p in packs), sum(p.fifo_total for p in packs)
    return (
        f"  packs  : {len(packs)} rows, fill mean {statistics.mean(fills):.3f} min {min(fills):.3f} max {max(fills):.3f}; "
        f"selected {chosen} tokens vs FIFO-greedy {fifo} in the same packs (gain {chosen / fifo:.3f}x)"
    )


def _one_pass(model, layout: Layout, coord_ids) -> float:
    """Forward+backward of every batch with step-level normalisation; returns the step loss."""
    model.set_attn_implementation(attn_implementation_for(layout.attn))
    return backward_packs(model, layout.batches, coord_ids=coord_ids, coord_cfg=COORD)


def _time(model, layouts: list[Layout], coord_ids, rounds: int) -> tuple[list[list[float]], list[float]]:
    """Seconds per pass (every round) and the step loss of each layout."""
    losses = [_one_pass(model, lay, coord_ids) for lay in layouts]  # warm-up
    times: list[list[float]] = [[] for _ in layouts]
    for _ in range(rounds):
        for i, lay in enumerate(layouts):
            t0 = time.perf_counter()
            _one_pass(model, lay, coord_ids)
            times[i].append(time.perf_counter() - t0)
    return times, losses


def _timing(times: list[float], padded: list[float] | None = None) -> str:
    """Median and min ms/pass, and each over padded's (min: the round least disturbed by other load)."""
    med, low = statistics.median(times), min(times)
    text = f"median {med * 1000:.1f} ms/pass (min {low * 1000:.1f})"
    if padded is None:
        return text
    return f"{text}, ratio packed/padded {med / statistics.median(padded):.2f} (min {low / min(padded):.2f})"


def _segments(proc, args: argparse.Namespace, case: str):
    if case != "long":
        return tiny_segments(proc, args.segments, seed=args.seed, prefix_len=20)
    # Draw extra samples so that ``--segments`` remain once those over the length bound are dropped.
    pool = tiny_segments(proc, 2 * args.segments, seed=args.seed, prefix_len=20, max_objects=LONG_MAX_OBJECTS)
    return [s for s in pool if s.length <= args.long_max_len][: args.segments]


def _run_case(args: argparse.Namespace, case: str, segments) -> None:
    hidden = HIDDEN if case == "h32" else args.hidden
    pack_len = args.long_pack_len if case == "long" else args.pack_len
    tiny = BUILDERS[args.family](seed=args.seed, hidden=hidden)
    model, proc = tiny.model, tiny.processor
    model.train()
    coord_ids = coord_ids_tensor(coord_token_ids(proc.tokenizer))
    packs = _packs(segments, pack_len)
    rows = _packed_batches(segments, packs, model, pack_len)
    padded = [
        pad_segments(segments[i : i + args.batch], pad_token_id=proc.tokenizer.pad_token_id)
        for i in range(0, len(segments), args.batch)
    ]
    layouts = [Layout("padded", "sdpa", padded), Layout("packed/sdpa", "sdpa", rows), Layout(f"packed/{args.attn}", args.attn, rows)]
    times, losses = _time(model, layouts, coord_ids, args.rounds)
    real = sum(s.length for s in segments)
    padded_tokens = sum(b.inputs["input_ids"].numel() for b in padded)
    lengths = [s.length for s in segments]
    kernel = resolve_kernel(args.attn, "cpu", None)
    print(
        f"case {case}: {args.family} hidden {hidden}, {len(segments)} segments, {real} tokens "
        f"(lengths {min(lengths)}..{max(lengths)}), packs <= {pack_len}; {args.attn} runs kernel {kernel}"
    )
    print(
        f"  padded : {len(padded)} batches of {args.batch}, {padded_tokens} tokens "
        f"({100 * (1 - real / padded_tokens):.0f}% padding), {_timing(times[0])}"
    )
    for lay, t in zip(layouts[1:], times[1:]):
        print(f"  {lay.name:<13}: {len(lay.batches)} rows, {_timing(t, times[0])}")
    print(_pack_report(packs))
    diff = max(abs(x - losses[0]) for x in losses)
    print(f"  step loss padded {losses[0]:.6f}; max abs diff over layouts {diff:.2e}")


def main(args: argparse.Namespace) -> int:
    if args.threads:
        torch.set_num_threads(args.threads)
    proc = BUILDERS[args.family](seed=args.seed).processor
    print(f"learn: torch {torch.__version__}, threads {torch.get_num_threads()}, rounds {args.rounds}")
    mixed = None
    for case in args.cases:
        if case == "long":
            segments = _segments(proc, args, case)
        else:
            mixed = mixed if mixed is not None else _segments(proc, args, case)
            segments = mixed
        _run_case(args, case, segments)
    return 0
