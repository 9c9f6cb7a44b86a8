"""Config -> the rollout records: the stop rules (``coordexp.core.repeat``) and the backends' decoding.

Like ``coordexp.bind.transitions``, these functions read only attributes of the root ``Config`` (so the
key-reach test can trace them) and put no default of their own into the records. Two rules live here
because they follow from several keys at once:

- the decode mode a backend sees is ``beam`` when ``decode_mode: beam``, else ``sampling`` when
  ``decoding.temperature > 0``, else ``greedy`` (the schema's ``decode_mode`` only says beam or not);
- ``num_return_sequences: null`` means one candidate per beam (reference rollout 10.1).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from coordexp.backends.protocol import DecodingConfig
from coordexp.bind.transitions import _rollout_matching
from coordexp.core.repeat import StopRulesConfig

if TYPE_CHECKING:
    from coordexp.config.schema_root import Config


def bind_stop_rules(cfg: Config) -> StopRulesConfig:
    """``rollout_matching.repeat_terminate.*`` (the duplicate rule's threshold is shared with the prefix policy)."""
    rt = _rollout_matching(cfg, "stop rules").repeat_terminate
    dup = rt.duplicate_object
    return StopRulesConfig(
        enabled=rt.enabled,
        min_new_tokens=rt.min_new_tokens,
        max_consecutive_token_repeats=rt.max_consecutive_token_repeats,
        ngram_size=rt.ngram_size,
        ngram_repeats=rt.ngram_repeats,
        max_object_keys=rt.max_object_keys,
        duplicate_object=dup.enabled,
        duplicate_iou_threshold=dup.iou_threshold,
        duplicate_same_desc=dup.same_desc,
    )


def bind_decoding(cfg: Config) -> DecodingConfig:
    """The decoding knobs every rollout backend reads."""
    rm = _rollout_matching(cfg, "decoding")
    sampling = rm.decoding.temperature > 0
    mode = "beam" if rm.decode_mode == "beam" else "sampling" if sampling else "greedy"
    beams = rm.num_beams
    return DecodingConfig(
        decode_mode=mode,
        num_beams=beams,
        num_return_sequences=beams if rm.num_return_sequences is None else rm.num_return_sequences,
        temperature=rm.decoding.temperature,
        top_p=rm.decoding.top_p,
        top_k=rm.decoding.top_k,
        repetition_penalty=rm.repetition_penalty,
        max_new_tokens=rm.max_new_tokens,
        decode_batch_size=rm.decode_batch_size,
    )
