"""``python -m coordexp.bench rollout``: hf rollout tokens/s with and without the stop rules, in one run.

With ``--backends hf,vllm_colocate,vllm_server`` it runs the backend ablation instead
(``coordexp.bench.rollout_backends``: same checkpoint, data, greedy decoding and budget for every backend).

The same requests (tiny Qwen3-VL, images of different sizes) are rolled out greedily by the hf backend
twice per round, rounds interleaved (in alternating order) so that machine load hits both alike: once with every stop rule
off, once with every rule armed (consecutive and n-gram repeats, the object cap, the duplicate stop,
``min_new_tokens`` 0) but with limits no rollout reaches, so both runs generate the same tokens and
the difference is the rules' per-token work alone; the run checks that the completions are identical.

Clocks: wall time (tokens/s) and the CPU time of this thread (run with ``--threads 1`` so that all of
generate's work is on it). On a shared machine both swing by more than the few percent being measured
(other processes take the cores and thrash the caches), so the cost figure is measured where it is
spent: the CPU time inside the stop-rule logits processor (``HFBackend.stop_rule_cpu_seconds``), plus
what transformers charges for having a logits processor at all (``LogitsProcessorList`` inspects each
processor's signature on every step), as a share of the CPU time of the armed generate calls.

The untrained tiny model emits few JSON structures, so the object rules' scanner has little to do on
its output; the second figure is the rules' cost on what a dense detector emits: microseconds per
token of a 60-object rollout (fixture BPE tokenizer) through the same per-token state, set against the
measured seconds per generate step to give the overhead a dense batch would see.
"""

from __future__ import annotations

import argparse
import statistics
import time

import attrs
import torch

from coordexp.backends.hf import HFBackend
from coordexp.backends.protocol import DecodingConfig, RolloutRequest
from coordexp.bench.parse import bench_context, dense_rollout_texts
from coordexp.bench.rollout_backends import add_backend_arguments
from coordexp.bench.rollout_backends import main as compare_backends
from coordexp.core.repeat import StopRules, StopRulesConfig
from coordexp.core.tokens import TokenContext
from coordexp.data.tiny import PROMPT, build_tiny_qwen3vl, tiny_samples
from coordexp.learn.encode import encode_prompt

BUDGET = 1_000_000  # a limit no bench rollout reaches: the rule works on every token and never fires
OFF, ARMED, OFF2 = "rules off", "rules armed", "rules off again"  # the last one measures the noise floor


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--requests", type=int, default=8, help="prompts per round (default 8)")
    p.add_argument("--batch", type=int, default=4, help="decode_batch_size (default 4)")
    p.add_argument("--max-new-tokens", type=int, default=64, help="generation budget (default 64)")
    p.add_argument("--rounds", type=int, default=7, help="timed rounds per configuration (default 7)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=0, help="torch intra-op threads; 0 = torch's default")
    add_backend_arguments(p)


def armed_rules(*, enabled: bool) -> StopRulesConfig:
    """Every rule on (or off) with limits that never fire, so that only their cost differs."""
    return StopRulesConfig(
        enabled=enabled, min_new_tokens=0, max_consecutive_token_repeats=BUDGET, ngram_size=8, ngram_repeats=BUDGET,
        max_object_keys=BUDGET, duplicate_object=True, duplicate_iou_threshold=1.0, duplicate_same_desc=True,
    )  # fmt: skip


def _requests(processor, n: int, seed: int) -> list[RolloutRequest]:
    out = []
    for j, (img, _) in enumerate(tiny_samples(n, seed=seed)):
        messages = [{"role": "user", "content": [{"type": "image", "image": img}, {"type": "text", "text": PROMPT}]}]
        enc = encode_prompt(processor, messages)
        out.append(RolloutRequest(f"bench-{j}", tuple(enc.input_ids.tolist()), enc, (img,)))
    return out


def _round(backend: HFBackend, requests: list[RolloutRequest]) -> tuple[float, float, int, list[tuple[int, ...]]]:
    """(wall seconds, this thread's CPU seconds, tokens, completions) of one generate call."""
    t0, c0 = time.perf_counter(), time.thread_time()
    results = backend.generate(requests)
    cpu, seconds = time.thread_time() - c0, time.perf_counter() - t0
    if any(r.stop_rule is not None for r in results):
        raise RuntimeError("a bench stop rule fired; the two configurations no longer generate the same tokens")
    return seconds, cpu, sum(r.new_tokens for r in results), [r.rollout.completion_ids for r in results]


def _list_overhead_us(vocab: int, rows: int, calls: int = 2000) -> float:
    """Microseconds transformers' LogitsProcessorList adds per step around one (do-nothing) processor."""
    from transformers import LogitsProcessor, LogitsProcessorList

    class Noop(LogitsProcessor):
        def __call__(self, input_ids, scores):
            return scores

    noop, ids, scores = Noop(), torch.zeros((rows, 8), dtype=torch.long), torch.zeros((rows, vocab))
    wrapped = LogitsProcessorList([noop])
    t0 = time.thread_time()
    for _ in range(calls):
        wrapped(ids, scores)
    t1 = time.thread_time()
    for _ in range(calls):
        noop(ids, scores)
    return ((t1 - t0) - (time.thread_time() - t1)) / calls * 1e6


def _dense_us_per_token(ctx: TokenContext, rounds: int, seed: int) -> tuple[float, int]:
    """Median microseconds per token of the armed rules over dense 60-object rollouts, and their length."""
    rules = StopRules(armed_rules(enabled=True), ctx)
    texts = dense_rollout_texts(8, 60, seed)
    ids = [ctx.encode(t.removesuffix("<|im_end|>")) for t in texts]
    n = sum(map(len, ids))
    per_round = []
    for _ in range(rounds):
        t0 = time.thread_time()
        for seq in ids:
            state = rules.start()
            for tok in seq:
                state.advance(tok)
        per_round.append((time.thread_time() - t0) / n * 1e6)
    return statistics.median(per_round), n // len(ids)


@attrs.define
class _Runs:
    """Per configuration: tokens/s (wall) and CPU seconds of every round; the armed rules' CPU shares."""

    rates: dict[str, list[float]]
    cpu: dict[str, list[float]]
    shares: list[float]
    tokens: int = 0


def _measure(backends: dict[str, HFBackend], requests: list[RolloutRequest], rounds: int) -> _Runs:
    """Rounds interleaved, in alternating order, so that load and cache state hit every configuration alike."""
    runs = _Runs({n: [] for n in backends}, {n: [] for n in backends}, [])
    armed = backends[ARMED]
    for i in range(rounds):
        for name, backend in (backends.items() if i % 2 == 0 else reversed(backends.items())):
            before = armed.stop_rule_cpu_seconds
            seconds, cpu_s, runs.tokens, _ = _round(backend, requests)
            runs.rates[name].append(runs.tokens / seconds)
            runs.cpu[name].append(cpu_s)
            if backend is armed:
                runs.shares.append((armed.stop_rule_cpu_seconds - before) / cpu_s)
    return runs


def _pct(a: float, b: float) -> str:
    return f"{100 * (a / b - 1):+.2f}%"


def _report(runs: _Runs, args: argparse.Namespace, vocab: int) -> float:
    """Print the end-to-end figures and the rules' own cost; returns the CPU ms of one generate step."""
    med = {n: statistics.median(v) for n, v in runs.cpu.items()}
    rate = {n: statistics.median(v) for n, v in runs.rates.items()}
    steps = -(-args.requests // args.batch) * args.max_new_tokens  # at most: rows that end early stop sooner
    plumbing = _list_overhead_us(vocab, args.batch) * steps / 1e6 / med[ARMED]
    inside = statistics.median(runs.shares)
    print(f"hf rollouts: tiny Qwen3-VL, {args.requests} requests, decode_batch_size {args.batch}, "
          f"max_new_tokens {args.max_new_tokens}, greedy, {runs.tokens} tokens per round, {args.rounds} rounds")  # fmt: skip
    for name, r in runs.rates.items():
        print(f"  {name:15s}: {rate[name]:7.1f} tokens/s wall (min {min(r):.1f}, max {max(r):.1f}); "
              f"{med[name] * 1000:.0f} ms CPU per round")  # fmt: skip
    print(f"  stop-rule cost: {100 * inside:.2f}% of the armed CPU time inside the processor "
          f"(min {100 * min(runs.shares):.2f}%, max {100 * max(runs.shares):.2f}%) + {100 * plumbing:.2f}% "
          f"transformers' processor-list plumbing = {100 * (inside + plumbing):.2f}%; completions identical")  # fmt: skip
    best = {n: min(v) for n, v in runs.cpu.items()}  # the least-disturbed round (timeit's estimator)
    print(f"  end to end, armed vs off: median CPU {_pct(med[ARMED], med[OFF])}, best-round CPU "
          f"{_pct(best[ARMED], best[OFF])}, wall time per token {_pct(rate[OFF], rate[ARMED])}; noise floor, "
          f"off again vs off: {_pct(med[OFF2], med[OFF])}, {_pct(best[OFF2], best[OFF])}, "
          f"{_pct(rate[OFF], rate[OFF2])}")  # fmt: skip
    return med[OFF] / steps * 1000 if steps else 0.0


def main(args: argparse.Namespace) -> int:
    if args.backends:  # the backend ablation (coordexp.bench.rollout_backends)
        return compare_backends(args)
    if args.threads:
        torch.set_num_threads(args.threads)
    tiny = build_tiny_qwen3vl(seed=args.seed)
    ctx = TokenContext.from_hf(tiny.processor.tokenizer, name="fixture-bpe")
    requests = _requests(tiny.processor, args.requests, args.seed)
    decoding = DecodingConfig(
        decode_mode="greedy", num_beams=1, num_return_sequences=1, temperature=0.0, top_p=1.0, top_k=-1,
        repetition_penalty=1.0, max_new_tokens=args.max_new_tokens, decode_batch_size=args.batch,
    )  # fmt: skip
    backends = {
        name: HFBackend(model=tiny.model, processor=tiny.processor, ctx=ctx, decoding=decoding,
                        stop_rules=armed_rules(enabled=on))
        for name, on in ((OFF, False), (ARMED, True), (OFF2, False))
    }  # fmt: skip
    outputs = {name: _round(b, requests)[3] for name, b in backends.items()}  # warm-up
    if outputs[OFF] != outputs[ARMED]:
        raise RuntimeError("the armed stop rules changed the completions")
    step_ms = _report(_measure(backends, requests, args.rounds), args, ctx.vocab_size)
    label, dense_ctx = bench_context("fixture")
    us, length = _dense_us_per_token(dense_ctx, args.rounds, args.seed)
    share = us * args.batch / 1000 / step_ms * 100 if step_ms else 0.0
    print(f"  dense rollouts ({label}, 60 objects, {length} tokens): {us:.2f} us/token through the armed rules; "
          f"at ~{step_ms:.2f} ms CPU per generate step with {args.batch} rows that is ~{share:.2f}% of a step")  # fmt: skip
    return 0
