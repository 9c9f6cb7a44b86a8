"""The rollout protocol: what every backend (hf, vllm_colocate, vllm_server, recorded) takes and returns.

Token in, token out. A request carries the prompt ids the learner will teacher-force after, plus the
processor's encoding of the same prompt (the HF backend feeds it as is; a vLLM backend sends the ids
and the images); a result carries the completion ids. Nothing downstream decodes a completion and
re-encodes it, so the prefix the learner trains on is exactly what the model generated.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Literal, Protocol

import attrs

from coordexp.core.parse_records import Rollout

if TYPE_CHECKING:
    from PIL import Image

    from coordexp.learn.encode import Encoding

DecodeMode = Literal["greedy", "sampling", "beam"]
# Why a completion ended: an EOS, the token budget, or a stop rule (coordexp.core.repeat).
FINISH_REASONS = ("stop", "length", "stop_rule")


@attrs.frozen(eq=False)
class RolloutRequest:
    """One prompt to roll out; ``encoding`` is ``coordexp.learn.encode.encode_prompt`` of the same prompt."""

    sample_id: str
    prompt_ids: tuple[int, ...] = attrs.field(converter=tuple)  # equals encoding.input_ids
    encoding: Encoding
    images: tuple[Image.Image, ...] = attrs.field(converter=tuple)  # in prompt order


@attrs.frozen
class RolloutResult:
    """One completion, with the stop rule that ended it and what it cost."""

    rollout: Rollout  # prompt_ids, completion_ids (no prompt, no padding), finish_reason, sample_id
    stop_rule: str | None  # a coordexp.core.repeat.StopRule value, None when no rule fired
    new_tokens: int  # len(completion_ids); a stop rule's forced ids may end a few past max_new_tokens
    seconds: float  # wall time of the generate call that produced it (shared by its batch)


@attrs.frozen
class DecodingConfig:
    """``rollout_matching`` decoding knobs as a backend reads them (defaults live in the schema).

    ``decode_mode`` is ``beam`` when the config asks for beams, else ``sampling`` when
    ``decoding.temperature > 0``, else ``greedy``.
    """

    decode_mode: DecodeMode
    num_beams: int
    num_return_sequences: int  # beam: candidates per sample, the best one is returned
    temperature: float
    top_p: float
    top_k: int  # -1 = off
    repetition_penalty: float
    max_new_tokens: int
    decode_batch_size: int  # requests per generate call

    @property
    def samples(self) -> bool:
        """Whether decoding draws random numbers (then the caller must pass a seed)."""
        return self.temperature > 0


class RolloutBackend(Protocol):
    """A rollout engine. Backends share no implementation; each documents its own behaviour."""

    name: str

    def generate(self, requests: Sequence[RolloutRequest], *, seed: int | None = None) -> list[RolloutResult]:
        """One result per request, in request order.

        ``seed`` makes sampling reproducible (the same seed and requests give the same rollouts); it is
        required when the decoding samples and ignored otherwise.
        """
        ...

    def sync_weights(self, model: object) -> None:
        """Make the next ``generate`` use ``model``'s current weights (after an optimizer step)."""
        ...

    def close(self) -> None:
        """Release the engine (memory, processes, connections); the backend is unusable afterwards."""
        ...


def parallel_requests(backend: RolloutBackend, decode_batch_size: int) -> int:
    """How many requests ``backend`` works on at once: ``decode_batch_size``, unless the backend spreads a call
    over several engines (the vLLM server backend: ``decode_batch_size`` per data-parallel replica of each
    server) and says so with a ``parallel_requests`` attribute. The pipelined Channel-B rollout sizes its chunks
    by it, so that every server is busy while the learner side works."""
    return int(getattr(backend, "parallel_requests", decode_batch_size))
