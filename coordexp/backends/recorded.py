"""The ``recorded`` backend: returns completions an earlier run recorded, token in / token out.

Offline replay is this backend behind the same machine and the same pure transitions: no model, no
GPU. A completion is looked up by sample id and step (``at_step`` sets the step the next ``generate``
answers for); a request whose prompt ids differ from the recorded ones is refused, because the
target would then be built after a prompt the completion was never generated from.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from coordexp.backends.protocol import RolloutRequest, RolloutResult
from coordexp.core.parse_records import Rollout
from coordexp.core.repeat import StopRule
from coordexp.errors import RolloutError
from coordexp.telemetry.recording import RolloutRecord


class RecordedBackend:
    """Replays ``records`` (``coordexp.telemetry.recording.RolloutRecord``) by ``(sample_id, step, mode)``."""

    name = "recorded"

    def __init__(self, records: Iterable[RolloutRecord], *, source: str = "the recording", **_unused: Any) -> None:
        # build_backend passes the live backends' arguments too (model, processor, decoding...): none is needed
        self.source = source
        self._by_key: dict[tuple[str, int, str], RolloutRecord] = {}
        for rec in records:
            key = (rec.sample_id, rec.step, rec.mode)
            if key in self._by_key:
                raise RolloutError(f"{source}: sample {rec.sample_id!r} is recorded twice for {rec.mode} step "
                                   f"{rec.step}; a recording holds one rollout per sample and step")
            self._by_key[key] = rec
        self.step = 0
        self.mode = "train"
        self.served = 0

    def at_step(self, step: int, *, mode: str = "train") -> None:
        """The step (and mode) the next ``generate`` answers for."""
        self.step, self.mode = step, mode

    def generate(self, requests: Sequence[RolloutRequest], *, seed: int | None = None) -> list[RolloutResult]:
        """The recorded completion of each request; decoding is not redone, so ``seed`` is not used."""
        return [self._result(req) for req in requests]

    def _result(self, req: RolloutRequest) -> RolloutResult:
        rec = self._by_key.get((req.sample_id, self.step, self.mode))
        if rec is None:
            steps = sorted(s for (sid, s, m) in self._by_key if sid == req.sample_id and m == self.mode)
            where = f"it is recorded at {self.mode} steps {steps[:10]}" if steps else "it is not recorded at all"
            raise RolloutError(f"{self.source}: no recorded rollout for sample {req.sample_id!r} at {self.mode} step "
                               f"{self.step} ({where}); replay with the config and recording of the same run")
        if req.prompt_ids and rec.prompt_ids and tuple(req.prompt_ids) != rec.prompt_ids:
            raise RolloutError(f"{self.source}: sample {req.sample_id!r} step {self.step}: the prompt ids differ from "
                               "the recorded ones (another prompt, tokenizer or image processor); replay with the "
                               "recording run's config and tokenizer")
        self.served += 1
        rollout = Rollout(rec.completion_ids, rec.prompt_ids, rec.finish_reason, rec.sample_id)
        rule = None if rec.stop_rule is None else StopRule(rec.stop_rule)
        return RolloutResult(rollout=rollout, stop_rule=rule, new_tokens=len(rec.completion_ids), seconds=0.0)

    def sync_weights(self, model: object) -> None:
        """Recorded completions do not depend on weights."""

    def close(self) -> None:
        self._by_key.clear()
