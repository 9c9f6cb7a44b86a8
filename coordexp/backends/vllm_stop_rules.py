"""The stop rules of ``coordexp.core.repeat`` as a vLLM V1 logits processor, for colocate and server alike.

    LLM(model=..., logits_processors=[StopRulesLogitsProcessor])                       # colocate
    python -m vllm.entrypoints.openai.api_server --model DIR \\
        --logits-processors coordexp.backends.vllm_stop_rules:StopRulesLogitsProcessor  # server

Why it looks the way it does:
- The rules are per request: a request carries its caps in ``SamplingParams.extra_args`` (``vllm_xargs``
  on ``/v1/completions``, ``sampling_params.extra_args`` on ``/inference/v1/generate``) under
  ``STOP_RULES_ARG``, built by ``stop_rules_args``; a request without it is never touched, so one engine
  serves runs with different rules. ``validate_params`` refuses a malformed argument before the request
  runs (the server answers HTTP 400 with the message).
- Each row's ``StopState`` takes the row's new output tokens in ``update_state`` (vLLM hands every
  processor a live reference to each request's output list), so a step costs what the rules cost in the
  HF backend's processor: O(1) for the token rules, O(new bytes) for the object rules. A fired row gets
  its forced ids (every other logit -inf), then ``<|im_end|>`` ends it as an EOS; other rows are untouched.
- The tokenizer context is built from the engine's own tokenizer, once, on the first request that asks for
  the rules; an engine that never sees one pays nothing. The argument's format lives in
  ``coordexp.backends.stop_rules_args``, which a client imports without vLLM installed.
- Parse still makes the final cut, and the backends replay the rules over the returned ids
  (``apply_stop_rules``) to name the rule that fired: the same rollout stops at the same token as in HF.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch
from vllm.v1.sample.logits_processor import BatchUpdate, LogitsProcessor, MoveDirectionality

from coordexp.backends.stop_rules_args import STOP_RULES_ARG, parse_stop_rules_arg, stop_rules_args
from coordexp.core.repeat import StopRules, StopState
from coordexp.core.tokens import TokenContext

__all__ = ["STOP_RULES_ARG", "StopRulesLogitsProcessor", "parse_stop_rules_arg", "stop_rules_args"]

if TYPE_CHECKING:
    from vllm import SamplingParams
    from vllm.config import VllmConfig

class _Row:
    """One request's state: its rules, the live output-id list vLLM extends, and how much was read."""

    __slots__ = ("state", "output_ids", "seen")

    def __init__(self, state: StopState, output_ids: list[int]) -> None:
        self.state = state
        self.output_ids = output_ids
        self.seen = 0

    def catch_up(self) -> int | None:
        """Feed the tokens generated since the last step; the id this row must emit next, if forced."""
        ids = self.output_ids
        while self.seen < len(ids):
            tok = ids[self.seen]
            if tok < 0:  # a placeholder of a token still being sampled (async scheduling): read it next step
                break
            self.state.advance(tok)
            self.seen += 1
        return self.state.next_forced()


class StopRulesLogitsProcessor(LogitsProcessor):
    """coordexp's stop rules inside a vLLM engine (see the module docstring)."""

    @classmethod
    def validate_params(cls, sampling_params: SamplingParams) -> None:
        extra = sampling_params.extra_args or {}
        if STOP_RULES_ARG in extra:
            parse_stop_rules_arg(extra[STOP_RULES_ARG])

    def __init__(self, vllm_config: VllmConfig, device: torch.device, is_pin_memory: bool) -> None:
        self._tokenizer_path = vllm_config.model_config.tokenizer
        self._ctx: TokenContext | None = None
        self._rules: dict[tuple, StopRules] = {}
        self._rows: dict[int, _Row] = {}
        self._forced: dict[int, int] = {}  # batch index -> the id it must emit in the next step

    def is_argmax_invariant(self) -> bool:
        return False  # forcing an id changes greedy's argmax: the processor must run under greedy too

    def _context(self) -> TokenContext:
        if self._ctx is None:
            from transformers import AutoTokenizer

            tok = AutoTokenizer.from_pretrained(self._tokenizer_path)
            self._ctx = TokenContext.from_hf(tok, name=str(self._tokenizer_path))
        return self._ctx

    def _rules_for(self, raw: Any) -> StopRules | None:
        cfg, eos = parse_stop_rules_arg(raw)
        if not cfg.active:
            return None
        key = (cfg, eos)
        if key not in self._rules:  # one StopRules per distinct config: its tables cost a vocabulary pass
            self._rules[key] = StopRules(cfg, self._context(), eos_ids=eos)
        return self._rules[key]

    def update_state(self, batch_update: BatchUpdate | None) -> None:
        if batch_update is not None:
            self._apply_batch_changes(batch_update)
        self._forced = {}
        for index, row in self._rows.items():
            forced = row.catch_up()
            if forced is not None:
                self._forced[index] = forced

    def _apply_batch_changes(self, update: BatchUpdate) -> None:
        """Removed, then added, then moved: the order vLLM's persistent batch documents."""
        for index in update.removed:
            self._rows.pop(index, None)
        for index, params, _prompt_ids, output_ids in update.added:
            extra = params.extra_args or {}
            rules = self._rules_for(extra[STOP_RULES_ARG]) if STOP_RULES_ARG in extra else None
            if rules is None:
                self._rows.pop(index, None)  # an added request replaces whatever held its index
            else:
                self._rows[index] = _Row(rules.start(), output_ids)
        for src, dst, direction in update.moved:
            a, b = self._rows.pop(src, None), self._rows.pop(dst, None)
            if a is not None:
                self._rows[dst] = a
            if direction == MoveDirectionality.SWAP and b is not None:
                self._rows[src] = b

    def apply(self, logits: torch.Tensor) -> torch.Tensor:
        if not self._forced:
            return logits
        rows = [i for i in self._forced if i < logits.shape[0]]
        index = torch.tensor(rows, device=logits.device)
        keep = torch.tensor([self._forced[i] for i in rows], device=logits.device)
        logits[index] = float("-inf")
        logits[index, keep] = 0.0
        return logits
