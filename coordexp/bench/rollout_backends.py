"""``python -m coordexp.bench rollout --backends hf,vllm_colocate[,vllm_server]``: the seeds' backend ablation.

Every backend rolls out the same requests (one checkpoint, the same synthetic images and prompts), with the
same greedy decoding, token budget and ``decode_batch_size``; engine start and the first (warm-up) call are
not timed. Per backend it reports rollouts/s and tokens/s (median over ``--rounds`` calls), the start time
and the peak memory seen while it worked; across backends, how many completions are token-identical to the
first backend's and how many parse to the same objects; and it writes one overlay image per sample (GT
against each backend's parsed objects, matched with the run's default match settings).

Memory is sampled every 50 ms while a backend starts and generates: on CUDA the device's used memory
(vLLM reserves its KV cache up front), on the CPU the resident memory of this process and its children
(vLLM's engine core and worker are child processes; a ``vllm_server``'s own memory is not counted, it is
another process tree). Timings on a shared machine swing with its load: compare backends within one run. The
checkpoint is ``--model DIR`` or, by default, the
servable tiny Qwen3-VL (``coordexp.data.tiny.build_servable_tiny_qwen3vl``) in float32. ``vllm_server``
talks to a server already serving the same folder (``--server-url``; ``python -m coordexp.launch`` starts
one). Run the vLLM backends where vLLM is installed (``tox -e vllm`` on a CPU machine).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import attrs
import torch

from coordexp.backends import build_backend
from coordexp.backends.protocol import DecodingConfig, RolloutRequest, RolloutResult
from coordexp.core.repeat import StopRulesConfig
from coordexp.core.tokens import TokenContext
from coordexp.errors import ConfigError

RM = "custom.extra.rollout_matching"
NO_RULES = StopRulesConfig(
    enabled=False, min_new_tokens=0, max_consecutive_token_repeats=0, ngram_size=0, ngram_repeats=2,
    max_object_keys=None, duplicate_object=False, duplicate_iou_threshold=0.9, duplicate_same_desc=True,
)  # fmt: skip
KNOWN = ("hf", "vllm_colocate", "vllm_server")


class PeakMemory:
    """The highest memory in use while the block runs (see the module docstring for what is counted)."""

    def __init__(self, every_s: float = 0.05) -> None:
        self.every_s, self.peak, self._stop = every_s, 0, threading.Event()
        self._thread: threading.Thread | None = None

    @staticmethod
    def now() -> int:
        if torch.cuda.is_available():
            free, total = torch.cuda.mem_get_info()
            return total - free
        import psutil

        me = psutil.Process()
        total = me.memory_info().rss
        for child in me.children(recursive=True):
            try:
                total += child.memory_info().rss
            except psutil.Error:  # a child that exited between the listing and the read
                continue
        return total

    def _run(self) -> None:
        while not self._stop.wait(self.every_s):
            self.peak = max(self.peak, self.now())

    def __enter__(self) -> PeakMemory:
        self.peak = self.now()
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self.peak = max(self.peak, self.now())


@attrs.define
class BackendRun:
    name: str
    start_s: float
    seconds: list[float]
    results: list[RolloutResult]
    peak_bytes: int

    @property
    def tokens(self) -> int:
        return sum(r.new_tokens for r in self.results)


def add_backend_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--backends", default=None,
                   help=f"comma-separated backends to compare ({', '.join(KNOWN)}); omitted: the stop-rule cost bench")
    p.add_argument("--model", default=None, help="checkpoint folder (default: the servable tiny Qwen3-VL)")
    p.add_argument("--server-url", default=None, help="vllm_server: the base URL of a server on the same --model")
    p.add_argument("--out", type=Path, default=None, help="folder for the overlay images (default: a temp folder)")


def parse_backends(raw: str) -> list[str]:
    names = [n.strip() for n in raw.split(",") if n.strip()]
    unknown = [n for n in names if n not in KNOWN]
    if not names or unknown:
        raise ConfigError([f"--backends: unknown {unknown or 'empty list'}; choose from {list(KNOWN)}"])
    return names


def _checkpoint(args: argparse.Namespace, scratch: Path) -> Path:
    if args.model is not None:
        return Path(args.model)
    from coordexp.data.tiny import build_servable_tiny_qwen3vl

    return build_servable_tiny_qwen3vl(seed=args.seed, out_dir=scratch / "model").path


def _requests(processor: Any, n: int, seed: int) -> tuple[list[RolloutRequest], list[tuple]]:
    from coordexp.data.tiny import PROMPT, tiny_samples
    from coordexp.learn.encode import encode_prompt

    samples = tiny_samples(n, seed=seed)
    out = []
    for j, (img, _) in enumerate(samples):
        messages = [{"role": "user", "content": [{"type": "image", "image": img}, {"type": "text", "text": PROMPT}]}]
        enc = encode_prompt(processor, messages)
        out.append(RolloutRequest(f"bench-{j}", tuple(enc.input_ids.tolist()), enc, (img,)))
    return out, samples


def _backend_kwargs(name: str, args: argparse.Namespace, folder: Path, scratch: Path, max_len: int) -> dict[str, Any]:
    """What each backend needs beyond the shared model, processor, decoding and rules: built from a config,
    as a run builds it, so the bench's engine is a run's engine."""
    from coordexp.bind import bind, minimal_config

    if name == "hf":
        return {}
    overrides = [f"{RM}.rollout_backend=vllm", f"{RM}.vllm.max_model_len={max_len}", f"model.model={folder}",
                 "model.torch_dtype=float32", f"training.seed={args.seed}", f"{RM}.vllm.enforce_eager=true",
                 f"{RM}.vllm.max_num_seqs={args.batch}"]
    if name == "vllm_colocate":
        bound = bind(minimal_config("rollout_matching_sft", (*overrides, f"{RM}.vllm.mode=colocate")), env={})
        return {"vllm": bound.vllm, "workdir": scratch / "colocate"}
    if args.server_url is None:
        raise ConfigError(["--server-url: vllm_server needs a running server on the same --model folder; start one "
                           "with `python -m coordexp.launch` (see docs/backends.md) and pass its URL"])
    servers = f"{RM}.vllm.server.servers=[{{base_url: {args.server_url}, group_port: 51216}}]"
    bound = bind(minimal_config("rollout_matching_sft", (*overrides, f"{RM}.vllm.mode=server", servers)), env={})
    return {"server": bound.server, "run_dir": scratch / "server"}


def _run_backend(build: Callable[[], Any], requests: Sequence[RolloutRequest], rounds: int, name: str) -> BackendRun:
    with PeakMemory() as mem:
        t0 = time.perf_counter()
        backend = build()
        try:
            backend.generate(requests)  # warm-up: the engine starts (vLLM backends start lazily)
            start = time.perf_counter() - t0
            seconds, results = [], []
            for _ in range(rounds):
                t1 = time.perf_counter()
                results = backend.generate(requests)
                seconds.append(time.perf_counter() - t1)
        finally:
            backend.close()
    return BackendRun(name, start, seconds, results, mem.peak)


def _parsed(results: Sequence[RolloutResult], ctx: TokenContext) -> list[tuple]:
    from coordexp.core.parse import parse

    return [tuple((o.desc, o.geom_type.value, o.coord_bins) for o in parse(r.rollout, ctx=ctx).valid_objects)
            for r in results]


def _overlays(out: Path, runs: Sequence[BackendRun], samples: Sequence[tuple], ctx: TokenContext) -> list[Path]:
    from coordexp.bind import bind, minimal_config
    from coordexp.core.geometry import Shape
    from coordexp.core.match import match
    from coordexp.report.overlay import OverlayObject, PredictionSet, draw_overlay

    cfg = bind(minimal_config("rollout_matching_sft"), env={}).match
    parsed = {run.name: _parsed(run.results, ctx) for run in runs}
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for i, (img, gt_objects) in enumerate(samples):
        gt = [OverlayObject(g.desc, g.geom_type.value, g.points) for g in gt_objects]
        gt_shapes = [Shape(g.geom_type, g.points) for g in gt_objects]
        sets = []
        for run in runs:
            objs = parsed[run.name][i]
            pairs = match([Shape(t, b) for _, t, b in objs], gt_shapes, cfg=cfg).matched_pairs
            sets.append(PredictionSet(run.name, [OverlayObject(d, t, b) for d, t, b in objs], matches=pairs))
        path = out / f"overlay_{i:03d}.png"
        draw_overlay(img, gt, sets, width=img.width, height=img.height, title=f"sample {i}").save(path)
        written.append(path)
    return written


def _report(runs: Sequence[BackendRun], ctx: TokenContext, args: argparse.Namespace, overlays: list[Path]) -> None:
    n = args.requests
    print(f"rollout backends: {n} requests, decode_batch_size {args.batch}, max_new_tokens {args.max_new_tokens}, "
          f"greedy, {args.rounds} timed rounds each (medians); same checkpoint and requests for every backend")
    ref, ref_parsed = runs[0], _parsed(runs[0].results, ctx)
    for run in runs:
        med = statistics.median(run.seconds)
        same_ids = sum(a.rollout.completion_ids == b.rollout.completion_ids for a, b in zip(run.results, ref.results))
        same_objs = sum(a == b for a, b in zip(_parsed(run.results, ctx), ref_parsed))
        print(f"  {run.name:14s}: {n / med:8.2f} rollouts/s, {run.tokens / med:9.1f} tokens/s ({run.tokens} tokens "
              f"per round, {med:.3f} s); start + warm-up {run.start_s:.1f} s; peak memory "
              f"{run.peak_bytes / 2**30:.2f} GiB; vs {ref.name}: {same_ids}/{n} completions identical, "
              f"{same_objs}/{n} parse to the same objects")  # fmt: skip
    base = statistics.median(ref.seconds)
    for run in runs[1:]:
        print(f"  {run.name} / {ref.name} throughput: {base / statistics.median(run.seconds):.2f}x")
    print(f"  overlays (GT vs {', '.join(r.name for r in runs)}): {len(overlays)} images in "
          f"{overlays[0].parent if overlays else '-'}")


def main(args: argparse.Namespace) -> int:
    from coordexp.config.schema_model import TunerConfig
    from coordexp.learn.model import load_model

    names = parse_backends(args.backends)
    if args.threads:
        torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory(prefix="coordexp-bench-") as tmp:
        scratch = Path(tmp)
        folder = _checkpoint(args, scratch)
        loaded = load_model(folder, dtype="float32", attn_impl="sdpa", tuner_cfg=TunerConfig(train_type="full"))
        ctx = TokenContext.from_hf(loaded.processor.tokenizer, name=str(folder))
        requests, samples = _requests(loaded.processor, args.requests, args.seed)
        decoding = DecodingConfig(
            decode_mode="greedy", num_beams=1, num_return_sequences=1, temperature=0.0, top_p=1.0, top_k=-1,
            repetition_penalty=1.0, max_new_tokens=args.max_new_tokens, decode_batch_size=args.batch,
        )  # fmt: skip
        max_len = max(len(r.prompt_ids) for r in requests) + args.max_new_tokens + 8
        runs = []
        for name in names:
            extra = _backend_kwargs(name, args, folder, scratch, max_len)

            def build(name=name, extra=extra):
                return build_backend(name, model=loaded.model, processor=loaded.processor, ctx=ctx,
                                     decoding=decoding, stop_rules=NO_RULES, **extra)

            runs.append(_run_backend(build, requests, args.rounds, name))
        out = args.out or Path(tempfile.mkdtemp(prefix="coordexp-bench-overlays-"))
        _report(runs, ctx, args, _overlays(out, runs, samples, ctx))
    return 0
