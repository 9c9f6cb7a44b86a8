"""Rules every rollout backend shares: the request check, the EOS ids, per-request seeds, the finish rule.

One home so that hf, vllm_colocate and vllm_server cannot drift apart: the same completion must end at the
same token with the same finish reason whichever engine generated it (``tests/vllm`` compares them).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

import torch

from coordexp.backends.protocol import RolloutRequest, RolloutResult
from coordexp.core.parse_records import Rollout
from coordexp.core.repeat import StopRules, apply_stop_rules
from coordexp.errors import RolloutError
from coordexp.learn.model import unwrap


def check_request(req: RolloutRequest) -> None:
    """The encoding must be the prompt the learner will extend: same ids, nothing re-tokenized."""
    ids = req.encoding.input_ids
    if ids.ndim != 1 or tuple(ids.tolist()) != req.prompt_ids:
        raise RolloutError(
            f"sample {req.sample_id}: request prompt_ids differ from its encoding's input_ids "
            f"({len(req.prompt_ids)} vs {ids.numel()} ids); build both with coordexp.learn.encode.encode_prompt"
        )
    if (req.encoding.pixel_values is None) != (req.encoding.image_grid_thw is None):
        raise RolloutError(f"sample {req.sample_id}: pixel_values and image_grid_thw come together (both or neither)")


def eos_ids(model: torch.nn.Module) -> tuple[int, ...]:
    """The ids that end a completion, from the model's generation config (several for Qwen chat models)."""
    eos = getattr(unwrap(model).generation_config, "eos_token_id", None)
    if eos is None:
        return ()
    return tuple(eos) if isinstance(eos, list | tuple) else (int(eos),)


def seed_for(seed: int, index: int) -> int:
    """A 31-bit seed per (call seed, chunk or request index), spread so that neighbouring seeds share no stream."""
    digest = hashlib.blake2b(f"{seed}:{index}".encode(), digest_size=4).digest()
    return int.from_bytes(digest, "little") & 0x7FFFFFFF


def finished(req: RolloutRequest, generated: Sequence[int], rules: StopRules, seconds: float) -> RolloutResult:
    """An engine's raw completion as the protocol's result: cut after the first EOS, the stop rules replayed
    (an engine that ran them inside generation stopped at the same token, so the replay only names the rule),
    and the finish reason HF would give: ``stop_rule``, ``stop`` (ends with EOS) or ``length``."""
    ids = list(generated)
    end = next((i + 1 for i, tok in enumerate(ids) if tok in rules.eos_ids), len(ids))
    ids, decision = ids[:end], None
    if rules.cfg.active:
        outcome = apply_stop_rules(ids, rules=rules)
        ids, decision = list(outcome.ids), outcome.decision
    if decision is not None:
        reason = "stop_rule"
    else:
        reason = "stop" if ids and ids[-1] in rules.eos_ids else "length"
    rollout = Rollout(tuple(ids), req.prompt_ids, reason, req.sample_id)
    return RolloutResult(rollout, None if decision is None else decision.rule.value, len(ids), seconds)
