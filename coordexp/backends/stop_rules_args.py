"""The per-request argument that carries a rollout's stop rules to a vLLM engine (colocate or server).

The format is plain JSON (it travels in ``SamplingParams.extra_args`` offline and in ``vllm_xargs`` /
``sampling_params.extra_args`` over HTTP), so a client builds it without vLLM installed; the engine side,
``coordexp.backends.vllm_stop_rules``, parses and validates it with ``parse_stop_rules_arg``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import attrs

from coordexp.core.repeat import StopRulesConfig

STOP_RULES_ARG = "coordexp_stop_rules"  # the extra_args key a request's rules travel under
_EOS_FIELD = "eos_ids"
_FIELDS = {f.name: f.type for f in attrs.fields(StopRulesConfig)}
_INT_FIELDS = ("min_new_tokens", "max_consecutive_token_repeats", "ngram_size", "ngram_repeats")


def stop_rules_args(cfg: StopRulesConfig, eos_ids: Iterable[int]) -> dict[str, Any]:
    """The per-request argument for ``cfg`` (JSON-able: it also travels over HTTP to a server)."""
    return {STOP_RULES_ARG: {**attrs.asdict(cfg), _EOS_FIELD: sorted(int(i) for i in eos_ids)}}


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def parse_stop_rules_arg(raw: Any) -> tuple[StopRulesConfig, tuple[int, ...]]:
    """The rules config and EOS ids of one request's argument; ValueError says what is wrong."""
    where = f"extra_args[{STOP_RULES_ARG!r}]"
    if not isinstance(raw, Mapping):
        raise ValueError(f"{where} must be a mapping of the stop-rule fields, got {type(raw).__name__}")
    missing = sorted(set(_FIELDS) - set(raw))
    unknown = sorted(set(raw) - set(_FIELDS) - {_EOS_FIELD})
    if missing or unknown:
        raise ValueError(f"{where}: missing fields {missing}, unknown fields {unknown}; build it with "
                         "coordexp.backends.stop_rules_args.stop_rules_args")
    for name in ("enabled", "duplicate_object", "duplicate_same_desc"):
        if not isinstance(raw[name], bool):
            raise ValueError(f"{where}.{name} must be true or false, got {raw[name]!r}")
    for name in _INT_FIELDS:
        if not _is_int(raw[name]) or raw[name] < 0:
            raise ValueError(f"{where}.{name} must be an integer >= 0, got {raw[name]!r}")
    cap = raw["max_object_keys"]
    if cap is not None and (not _is_int(cap) or cap < 1):
        raise ValueError(f"{where}.max_object_keys must be null or an integer >= 1, got {cap!r}")
    iou = raw["duplicate_iou_threshold"]
    if isinstance(iou, bool) or not isinstance(iou, int | float) or not 0.0 <= iou <= 1.0:
        raise ValueError(f"{where}.duplicate_iou_threshold must be a number in [0, 1], got {iou!r}")
    eos = raw.get(_EOS_FIELD, [])
    if not isinstance(eos, list | tuple) or not all(_is_int(i) and i >= 0 for i in eos):
        raise ValueError(f"{where}.{_EOS_FIELD} must be a list of token ids, got {eos!r}")
    cfg = StopRulesConfig(**{name: raw[name] for name in _FIELDS})
    return cfg, tuple(int(i) for i in eos)
