"""The ``hf`` rollout backend: batched transformers ``generate`` on the live training model.

Why it looks the way it does:
- Prompts are the processor encodings the learner teacher-forces after (``RolloutRequest.encoding``),
  left-padded into one batch per ``decode_batch_size`` chunk: with left padding every row's next token
  sits in the last column, and the attention mask plus Qwen-VL's own M-RoPE index (computed from the
  mask and ``mm_token_type_ids``) give every row the positions it has alone. Images of a chunk are
  concatenated in row order (``pixel_values`` and ``image_grid_thw``), the order the model fills the
  image placeholder tokens in. Padding-free packing is a learner layout and plays no part here.
- Generation runs on the model being trained (LoRA/DoRA layers active, current weights), under
  ``torch.no_grad`` and in eval mode (no dropout); the previous train/eval mode is restored after.
- Stop rules (``coordexp.core.repeat``) run as a logits processor: a row whose rule fired gets only
  its forced ids (every other score -inf), then ``<|im_end|>`` ends it; other rows are untouched. Under
  beam search rows are reordered every step, so each row's state is replayed from its ids (O(length)
  per step; beams are a niche mode).
- Sampling draws from a private RNG stream seeded per chunk from the caller's seed, so a call is
  reproducible and the caller's own random stream is not disturbed.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import torch
from transformers import GenerationConfig, LogitsProcessor, LogitsProcessorList

from coordexp.backends.completion import check_request, eos_ids, seed_for
from coordexp.backends.protocol import DecodingConfig, RolloutRequest, RolloutResult
from coordexp.core.parse_records import Rollout
from coordexp.core.repeat import StopBatch, StopRules, StopRulesConfig, apply_stop_rules
from coordexp.core.tokens import TokenContext
from coordexp.errors import ConfigError, RolloutError
from coordexp.learn.model import unwrap

RM = "custom.extra.rollout_matching"


def generation_kwargs(dec: DecodingConfig) -> dict[str, Any]:
    """The transformers generation settings of a decoding config (reference rollout 10.2, D1/D2).

    Greedy decoding neutralises the sampling knobs (temperature 1, top_p 1, top_k 0 = off) instead of
    passing values transformers would warn about; a temperature above 0 samples.
    """
    sampling = dec.temperature > 0
    beam = dec.decode_mode == "beam"
    return {
        "max_new_tokens": dec.max_new_tokens,
        "do_sample": sampling,
        "temperature": max(1e-4, dec.temperature) if sampling else 1.0,
        "top_p": dec.top_p if sampling else 1.0,
        "top_k": dec.top_k if sampling and dec.top_k != -1 else 0,
        "repetition_penalty": dec.repetition_penalty,
        "num_beams": max(1, dec.num_beams) if beam else 1,
        "num_return_sequences": dec.num_return_sequences if beam else 1,
    }


class StopRulesProcessor(LogitsProcessor):
    """Per-row stop rules inside ``generate``: forces a fired row's ids, leaves the others alone."""

    def __init__(self, rules: StopRules, n_rows: int, prompt_width: int, *, replay: bool) -> None:
        self.rules = rules
        self.batch = StopBatch(rules, n_rows)
        self.prompt_width = prompt_width  # padded prompt length: generated ids start here
        self.replay = replay  # beam search reorders rows: rebuild each row's state from its ids
        self.cpu_seconds = 0.0  # this thread's CPU time inside the processor (the rules' cost)

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        if input_ids.shape[1] <= self.prompt_width:
            return scores  # the first step: nothing generated yet
        t0 = time.thread_time()
        scores = self._force(input_ids, scores)
        self.cpu_seconds += time.thread_time() - t0
        return scores

    def _force(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        if self.replay:
            forced = [self._replayed(row) for row in input_ids[:, self.prompt_width :].tolist()]
        else:  # (numpy's view of a CPU tensor reads the last column faster than torch indexing)
            last = input_ids.numpy()[:, -1] if input_ids.device.type == "cpu" else input_ids[:, -1]
            forced = self.batch.step(last.tolist())
        rows = [r for r, tok in enumerate(forced) if tok is not None]
        if rows:
            index = torch.tensor(rows, device=scores.device)
            keep = torch.tensor([forced[r] for r in rows], device=scores.device)
            scores[index] = float("-inf")
            scores[index, keep] = 0.0
        return scores

    def finish(self, last_column: Sequence[int]) -> None:
        """Feed the states the final generated token (``generate`` calls no processor after it)."""
        if not self.replay:
            self.batch.step(last_column)

    def _replayed(self, generated: list[int]) -> int | None:
        state = self.rules.start()
        for tok in generated:
            state.advance(tok)
            if state.finished:
                break
        return state.next_forced()


class HFBackend:
    """Rollouts with transformers ``generate`` on the live model (see the module docstring)."""

    name = "hf"

    def __init__(
        self,
        *,
        model: torch.nn.Module,
        processor: Any,
        ctx: TokenContext,
        decoding: DecodingConfig,
        stop_rules: StopRulesConfig,
    ) -> None:
        if decoding.decode_mode == "beam" and decoding.num_return_sequences > decoding.num_beams:
            raise ConfigError([
                f"{RM}.num_return_sequences: {decoding.num_return_sequences} is more than num_beams "
                f"({decoding.num_beams}); beam search returns at most one candidate per beam. Fix: lower it or "
                "set it to null (= num_beams)"
            ])
        self._model: torch.nn.Module | None = model
        self.decoding = decoding
        self.rules = StopRules(stop_rules, ctx, eos_ids=eos_ids(model))
        tok = processor.tokenizer
        self.pad_id = tok.pad_token_id if tok.pad_token_id is not None else ctx.im_end_id
        self.eos_ids = sorted(self.rules.eos_ids)
        self.stop_rule_cpu_seconds = 0.0  # CPU time the stop rules took inside generate, all calls so far

    @property
    def model(self) -> torch.nn.Module:
        if self._model is None:
            raise RolloutError("the hf rollout backend was closed; build a new one to generate again")
        return self._model

    def sync_weights(self, model: object) -> None:
        """Nothing to copy: generation runs on the training model itself, so it always has the current
        weights; a new model object (e.g. re-wrapped) simply replaces the one held."""
        if not isinstance(model, torch.nn.Module):
            raise RolloutError(f"hf backend: sync_weights needs the torch model, got {type(model).__name__}")
        self._model = model

    def close(self) -> None:
        self._model = None

    def generate(self, requests: Sequence[RolloutRequest], *, seed: int | None = None) -> list[RolloutResult]:
        """Roll out every request, ``decode_batch_size`` per ``generate`` call, results in request order."""
        if self.decoding.samples and seed is None:
            raise RolloutError(
                "hf backend: sampling (rollout_matching.decoding.temperature > 0) needs a seed per generate "
                "call so that rollouts are reproducible; pass seed=..."
            )
        for req in requests:
            check_request(req)
        model = self.model
        was_training = model.training
        model.eval()
        try:
            out: list[RolloutResult] = []
            size = self.decoding.decode_batch_size
            for start in range(0, len(requests), size):
                out.extend(self._chunk(requests[start : start + size], seed, start))
            return out
        finally:
            model.train(was_training)

    def _chunk(self, requests: Sequence[RolloutRequest], seed: int | None, start: int) -> list[RolloutResult]:
        model = unwrap(self.model)
        inputs, width = _left_padded(requests, self.pad_id, model.device)
        kwargs = generation_kwargs(self.decoding)
        beam = kwargs["num_beams"] > 1
        rows = len(requests) * kwargs["num_beams"]
        processor = StopRulesProcessor(self.rules, rows, width, replay=beam) if self.rules.cfg.active else None
        config = _generation_config(kwargs, beam=beam, eos_ids=self.eos_ids, pad_id=self.pad_id)
        t0 = time.perf_counter()
        with torch.no_grad(), torch.random.fork_rng(devices=_rng_devices(model.device)):
            torch.manual_seed(seed_for(seed or 0, start))
            out = model.generate(
                **inputs,
                generation_config=config,
                logits_processor=LogitsProcessorList([processor] if processor else []),
            )
        seconds = time.perf_counter() - t0
        sequences = out.sequences[:, width:]
        if processor is not None:
            if sequences.shape[1] and not beam:
                processor.finish(sequences[:, -1].tolist())
            self.stop_rule_cpu_seconds += processor.cpu_seconds
        picked = _best_beams(out, len(requests)) if beam else list(range(len(requests)))
        results = []
        for i, (req, row) in enumerate(zip(requests, picked, strict=True)):
            state = processor.batch.states[i] if processor is not None and not beam else None
            results.append(self._result(req, sequences[row].tolist(), state, seconds))
        return results

    def _result(self, req: RolloutRequest, generated: list[int], state: Any, seconds: float) -> RolloutResult:
        """Completion ids (up to and including the first EOS, no padding) with their finish reason."""
        end = next((i + 1 for i, tok in enumerate(generated) if tok in self.rules.eos_ids), len(generated))
        ids = generated[:end]
        decision = state.decision if state is not None else None
        if self.rules.cfg.active and state is None:
            outcome = apply_stop_rules(ids, rules=self.rules)
            ids, decision = list(outcome.ids), outcome.decision
        elif decision is not None:
            # the budget can end a row between the firing token and its last forced id: finish the cut
            ids = ids[: decision.at + 1] + list(decision.force)
        if decision is not None:
            reason = "stop_rule"
        else:
            reason = "stop" if ids and ids[-1] in self.rules.eos_ids else "length"
        rollout = Rollout(tuple(ids), req.prompt_ids, reason, req.sample_id)
        return RolloutResult(rollout, None if decision is None else decision.rule.value, len(ids), seconds)


_SAMPLING_KEYS = ("temperature", "top_p", "top_k")


def _generation_config(kwargs: dict[str, Any], *, beam: bool, eos_ids: list[int], pad_id: int) -> GenerationConfig:
    """``generation_kwargs`` as a GenerationConfig; greedy leaves the (unused) sampling knobs unset,
    since transformers flags a neutral top_k of 0 as an invalid greedy setting."""
    if not kwargs["do_sample"]:
        kwargs = {k: v for k, v in kwargs.items() if k not in _SAMPLING_KEYS}
    return GenerationConfig(
        **kwargs, eos_token_id=eos_ids, pad_token_id=pad_id, bos_token_id=None,
        return_dict_in_generate=True, output_scores=beam,
    )  # fmt: skip



def _rng_devices(device: torch.device) -> list[int]:
    return [device.index or 0] if device.type == "cuda" else []


def _left_padded(requests: Sequence[RolloutRequest], pad_id: int, device: torch.device) -> tuple[dict, int]:
    """One left-padded batch of the requests' encodings; returns it and the padded prompt width."""
    encs = [r.encoding for r in requests]
    width = max(e.input_ids.numel() for e in encs)
    n = len(encs)
    input_ids = torch.full((n, width), pad_id, dtype=torch.long)
    attention = torch.zeros((n, width), dtype=torch.long)
    mm_types = torch.zeros((n, width), dtype=encs[0].mm_token_type_ids.dtype)
    for i, e in enumerate(encs):
        k = e.input_ids.numel()
        input_ids[i, width - k :] = e.input_ids
        attention[i, width - k :] = 1
        mm_types[i, width - k :] = e.mm_token_type_ids
    batch: dict[str, torch.Tensor] = {"input_ids": input_ids, "attention_mask": attention, "mm_token_type_ids": mm_types}
    with_images = [e for e in encs if e.pixel_values is not None]
    if with_images:
        batch["pixel_values"] = torch.cat([e.pixel_values for e in with_images])
        batch["image_grid_thw"] = torch.cat([e.image_grid_thw for e in with_images])
    return {k: v.to(device) for k, v in batch.items()}, width


def _best_beams(out: Any, n_requests: int) -> list[int]:
    """Per request, the returned sequence with the highest ``sequences_scores`` (exactly one each)."""
    scores = out.sequences_scores.view(n_requests, -1)
    per = scores.shape[1]
    return [i * per + int(j) for i, j in enumerate(scores.argmax(dim=1).tolist())]
