"""Runner for ``Transition: decode``: the HF generation settings a config's decoding knobs give.

Input, one case or ``{"cases": [...]}``: ``{"rollout_matching": {...}}``, the decoding keys of a
``rollout_matching`` section as written in YAML (``decoding: {temperature, top_p, top_k}``,
``repetition_penalty``, ``max_new_tokens``, ``decode_mode`` ...). The section goes into the smallest valid
config, through ``coordexp.bind.bind_decoding`` (the record every backend decodes with), then through
``coordexp.backends.hf.generation_kwargs`` (what ``generate`` is called with); both are shown.
"""

from __future__ import annotations

from typing import Any

import attrs

from coordexp.bind import bind_decoding, minimal_config
from coordexp.spec.runners import each_case

TRANSITION = "decode"
RM = "custom.extra.rollout_matching"


def _overrides(section: dict[str, Any], prefix: str = RM) -> list[str]:
    out = []
    for key, value in section.items():
        if isinstance(value, dict):
            out += _overrides(value, f"{prefix}.{key}")
        else:
            out.append(f"{prefix}.{key}={value!r}" if isinstance(value, str) else f"{prefix}.{key}={value}")
    return out


def _run_one(case: dict[str, Any]) -> dict[str, Any]:
    from coordexp.backends.hf import generation_kwargs

    decoding = bind_decoding(minimal_config("rollout_matching_sft", _overrides(case["rollout_matching"])))
    return {"decoding": attrs.asdict(decoding), "generate_kwargs": generation_kwargs(decoding)}


def run(data: Any) -> Any:
    return each_case(data, _run_one, transition=TRANSITION)
