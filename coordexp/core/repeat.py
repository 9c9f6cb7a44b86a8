"""Stop rules: when a rollout must end early, decided one generated token at a time, per sequence.

Why they exist: a Stage-2 run degenerates by looping tokens or by spamming objects until the token
budget runs out (seed runbook 000, sections 4.2 and 5.5). Four rules end such a sequence; each row of a
batch has its own state, so one row stopping never stops the others:

- ``consecutive_repeat``: the last R generated tokens are identical;
- ``ngram_repeat``: the last m tokens equal each of the r-1 m-blocks before them;
- ``max_object_keys``: K object values are complete and the (K+1)-th ``"object_`` key has begun;
- ``duplicate_object``: an object value just closed whose box nearly duplicates an earlier complete
  object's (``coordexp.core.duplicates``, the rule ``cut_at_first_duplicate`` cuts by).

Token rules look at generated ids only (never the prompt, legacy W9) and wait for ``min_new_tokens``.
Object rules read the rollout's bytes through the same scanner as Parse (``coordexp.core.scan``),
resumed after each token: only an unterminated string is scanned again, so a step costs O(new bytes).
Detection is on text, not on token patterns, because BPE splits ``"object_`` differently in different
contexts.

What a firing rule forces: token rules force ``<|im_end|>`` and Parse makes the final cut (after the
last complete object). Object rules first force the text that closes what is open (a key string, the
root brace), then ``<|im_end|>``: a rollout capped at K objects ends ``..., "object_"}<|im_end|>`` and
parses to exactly K objects, not truncated (the legacy cap fired on the K-th key and kept K-1). Text
already emitted stays: a duplicate closed by BPE's fused ``"]},`` ends ``"]},}<|im_end|>``, not JSON, but
Parse cuts after the last object either way.
``apply_stop_rules`` replays the same state over finished ids, for a backend that cannot stop early,
and yields the ids a stopping backend would have produced; so every backend gives the same rollout.
"""

from __future__ import annotations

import enum
import json
from collections.abc import Iterable, Sequence

import attrs

from coordexp.core.coords import parse_coord_token
from coordexp.core.duplicates import NearDuplicates
from coordexp.core.keys import GeomType
from coordexp.core.scan import OBJECT_N, IncrementalScanner
from coordexp.core.tokens import TokenContext
from coordexp.errors import TokenizerError

__all__ = [
    "StopRule",
    "StopRulesConfig",
    "StopDecision",
    "StopOutcome",
    "StopRules",
    "StopState",
    "StopBatch",
    "apply_stop_rules",
    "stop_metrics",
]

_OBJECT_KEY_PREFIX = b"object_"
TRIGGERED_KEY = "rollout/repeat_terminate_triggered_sequences"
RULE_KEY = "rollout/stop_rule/{}"


class StopRule(enum.StrEnum):
    """Which rule ended a rollout; the values name the ``rollout/stop_rule/<rule>`` metrics."""

    CONSECUTIVE_REPEAT = "consecutive_repeat"
    NGRAM_REPEAT = "ngram_repeat"
    MAX_OBJECT_KEYS = "max_object_keys"
    DUPLICATE_OBJECT = "duplicate_object"


@attrs.frozen
class StopRulesConfig:
    """``rollout_matching.repeat_terminate.*`` as the rules read it (defaults live in the schema).

    ``max_consecutive_token_repeats`` and ``ngram_size`` of 0 switch their rule off, and
    ``max_object_keys`` None means no cap; nothing fires unless ``enabled``.
    """

    enabled: bool
    min_new_tokens: int  # token rules only: object rules count objects, a stronger guard
    max_consecutive_token_repeats: int
    ngram_size: int
    ngram_repeats: int
    max_object_keys: int | None
    duplicate_object: bool
    duplicate_iou_threshold: float  # exact box IoU, norm1000
    duplicate_same_desc: bool

    @property
    def watches_objects(self) -> bool:
        return self.enabled and (self.max_object_keys is not None or self.duplicate_object)

    @property
    def active(self) -> bool:
        """Whether any rule can fire (a backend skips the per-token work otherwise)."""
        return self.enabled and (
            self.watches_objects or self.max_consecutive_token_repeats > 0 or self.ngram_size > 0
        )


@attrs.frozen
class StopDecision:
    """A rule fired: on which generated token, and what the sequence must emit next."""

    rule: StopRule
    at: int  # index into the generated ids of the token that fired the rule
    force: tuple[int, ...]  # ids to emit after it: closing text (object rules), then <|im_end|>


@attrs.frozen
class StopOutcome:
    """A finished rollout after the final cut: the ids a stopping backend returns, and why it ended."""

    ids: tuple[int, ...]
    decision: StopDecision | None

    @property
    def rule(self) -> StopRule | None:
        return None if self.decision is None else self.decision.rule


class StopRules:
    """The rules of one config and tokenizer, shared by every row's state (forced ids are cached)."""

    def __init__(self, cfg: StopRulesConfig, ctx: TokenContext, *, eos_ids: Iterable[int] = ()) -> None:
        self.cfg = cfg
        self.ctx = ctx
        # A generated EOS ends the sequence: nothing after it is generated, so no rule looks at it.
        self.eos_ids = frozenset((ctx.im_end_id, *eos_ids))
        self._closings: dict[str, tuple[int, ...]] = {}
        # per id: 1 = holds a quote, 2 = holds another structural byte. Most tokens (words, coord
        # tokens) hold neither and cannot change the structure, so the scanner skips them.
        self.flags = bytes(_flag(b) for b in ctx.piece_bytes) if cfg.watches_objects else b""
        self.min_new = cfg.min_new_tokens
        self.repeats = cfg.max_consecutive_token_repeats if cfg.enabled else 0
        self.ngram = cfg.ngram_size if cfg.enabled else 0
        self.periodic_needed = cfg.ngram_size * (cfg.ngram_repeats - 1)  # token i == token i - m this long

    def start(self) -> StopState:
        return StopState(self)

    def forced_ids(self, closing: str) -> tuple[int, ...]:
        """``closing`` text as ids (checked to round-trip exactly), then ``<|im_end|>``."""
        ids = self._closings.get(closing)
        if ids is None:
            enc = tuple(self.ctx.encode(closing)) if closing else ()
            if self.ctx.bytes_of(enc) != closing.encode("utf-8"):
                raise TokenizerError(
                    f"tokenizer {self.ctx.name!r} does not encode the stop rules' closing text {closing!r} "
                    "exactly; the object stop rules need it to end a capped rollout cleanly"
                )
            ids = self._closings[closing] = (*enc, self.ctx.im_end_id)
        return ids


class StopState:
    """One sequence's rule state; ``advance`` takes each generated token in order."""

    __slots__ = (
        "rules", "n", "decision", "finished", "_forced", "_last", "_run", "_ring", "_periodic",
        "_buf", "_scan", "_resume", "_next_obj", "_closed", "_cap_marks", "_dups",
    )  # fmt: skip

    def __init__(self, rules: StopRules) -> None:
        self.rules = rules
        self.n = 0  # generated tokens seen
        self.decision: StopDecision | None = None
        self.finished = False  # an EOS was generated (or forced)
        self._forced = 0  # forced ids already emitted
        self._last, self._run = -1, 0  # consecutive-repeat run
        self._ring = [-1] * max(rules.ngram, 1)  # the last m tokens, by position mod m
        self._periodic = 0  # length of the suffix where token i equals token i - m
        self._buf = bytearray()  # the generated bytes (object rules only)
        self._scan = IncrementalScanner(OBJECT_N)
        self._resume = 0  # where the scan goes on: the end, or the quote of an unterminated string
        self._next_obj = 0  # first scanned object not yet seen closed
        self._closed = 0
        self._cap_marks = -1  # object keys before the end of the K-th object, once K are closed
        cfg = rules.cfg
        # the closed bbox objects so far, for the duplicate rule
        self._dups = NearDuplicates(iou_threshold=cfg.duplicate_iou_threshold, same_desc=cfg.duplicate_same_desc)

    def next_forced(self) -> int | None:
        """The id this sequence must emit next, or None while it generates freely (or has ended)."""
        if self.decision is None or self.finished or self._forced >= len(self.decision.force):
            return None
        return self.decision.force[self._forced]

    def advance(self, token_id: int) -> StopDecision | None:
        """Take one generated token; returns the decision when a rule fires on exactly this token."""
        if self.finished:
            return None
        if self.decision is not None:
            self._forced += 1
            self.finished = token_id in self.rules.eos_ids
            return None
        self.n += 1
        rules = self.rules
        if token_id in rules.eos_ids:
            self.finished = True
            return None
        decision = self._objects(token_id) if rules.flags else None
        rule = self._token_rules(token_id, rules)
        if decision is None and rule is not None and self.n >= rules.min_new:
            decision = StopDecision(rule, self.n - 1, rules.forced_ids(""))
        self.decision = decision
        return decision

    # -- token rules: O(1) per token ------------------------------------------------------------
    def _token_rules(self, tok: int, rules: StopRules) -> StopRule | None:
        self._run = self._run + 1 if tok == self._last else 1
        self._last = tok
        r, m = rules.repeats, rules.ngram
        fired = StopRule.CONSECUTIVE_REPEAT if r > 0 and self._run >= r else None
        if m > 0:
            slot = (self.n - 1) % m
            self._periodic = self._periodic + 1 if self.n > m and self._ring[slot] == tok else 0
            self._ring[slot] = tok
            if fired is None and self._periodic >= rules.periodic_needed:
                fired = StopRule.NGRAM_REPEAT
        return fired

    # -- object rules: the scanner over the new text --------------------------------------------
    def _objects(self, tok: int) -> StopDecision | None:
        buf, flags = self._buf, self.rules.flags
        in_string = self._resume < len(buf)
        if tok >= len(flags):
            return None  # an id past the tokenizer (a padded embedding row) has no text; Parse reports it
        buf += self.rules.ctx.piece_bytes[tok]
        flag = flags[tok]
        if flag == 1 or (flag and not in_string):
            open_at = self._scan.run(buf, self._resume)
            self._resume = open_at if open_at >= 0 else len(buf)
            rule = self._closures() or self._cap_reached()
        else:  # no byte that can close the open string or change the structure
            if not in_string:
                self._resume = len(buf)
            rule = self._cap_reached() if in_string else None
        return None if rule is None else StopDecision(rule, self.n - 1, self.rules.forced_ids(self._closing()))

    def _closures(self) -> StopRule | None:
        """Account for object values that closed on this token; a duplicate fires its rule."""
        objects, fired = self._scan.objects, None
        while self._next_obj < len(objects) and objects[self._next_obj].end >= 0:
            obj = objects[self._next_obj]
            self._next_obj += 1
            self._closed += 1
            if self.rules.cfg.duplicate_object and self._duplicate(obj.start, obj.end):
                fired = fired or StopRule.DUPLICATE_OBJECT
            cap = self.rules.cfg.max_object_keys
            if cap is not None and self._closed == cap:
                self._cap_marks = sum(1 for pos, _ in self._scan.key_marks if pos < obj.end)
        return fired

    def _cap_reached(self) -> StopRule | None:
        """K objects are closed and another ``"object_`` key has begun (open, or whole in one token)."""
        if self._cap_marks < 0:
            return None
        sc = self._scan
        if len(sc.key_marks) > self._cap_marks:
            return StopRule.MAX_OBJECT_KEYS
        if sc.expects_root_key() and self._buf.startswith(_OBJECT_KEY_PREFIX, self._resume + 1):
            return StopRule.MAX_OBJECT_KEYS
        return None

    def _closing(self) -> str:
        """Text that closes what is open: the string, then brackets, then braces (object_n nesting)."""
        sc, tail = self._scan, bytes(self._buf[self._resume :])
        quote = ""
        if tail:
            backslashes = len(tail) - len(tail.rstrip(b"\\"))
            quote = ' "' if backslashes % 2 else '"'  # a pending escape would swallow the quote
        return quote + "]" * sc.bdepth + "}" * sc.depth

    def _duplicate(self, start: int, end: int) -> bool:
        """Whether the value in bytes [start, end) is a bbox object that nearly repeats an earlier one."""
        found = _desc_and_box(bytes(self._buf[start:end]))
        return found is not None and self._dups.add(found[0], GeomType.BBOX, found[1])


_QUOTE = ord('"')
_STRUCTURAL = frozenset(b"{}[],:")


def _flag(piece: bytes) -> int:
    if _QUOTE in piece:
        return 1
    return 2 if any(b in _STRUCTURAL for b in piece) else 0


def _desc_and_box(value: bytes) -> tuple[str, tuple[int, ...]] | None:
    """(desc, bbox bins) of an object value with a desc and a well-formed bbox_2d, else None.

    Only such objects can be near-duplicates; anything else is Parse's to drop and count.
    """
    try:
        obj = json.loads(value)
    except (ValueError, RecursionError):
        return None
    if not isinstance(obj, dict) or not isinstance(obj.get("desc"), str) or not isinstance(obj.get(GeomType.BBOX), list):
        return None
    bins = [parse_coord_token(v.strip()) if isinstance(v, str) else None for v in obj[GeomType.BBOX]]
    if len(bins) != 4 or None in bins or bins[2] < bins[0] or bins[3] < bins[1]:
        return None
    return obj["desc"], tuple(bins)


class StopBatch:
    """One state per row of a batch; ``step`` takes the tokens just generated, one per row."""

    def __init__(self, rules: StopRules, n_rows: int) -> None:
        self.rules = rules
        self.states = [rules.start() for _ in range(n_rows)]

    def step(self, tokens: Sequence[int]) -> list[int | None]:
        """Advance every row; returns per row the id it must emit next (None: generate freely)."""
        out: list[int | None] = []
        for state, tok in zip(self.states, tokens, strict=True):
            state.advance(tok)
            out.append(None if state.decision is None else state.next_forced())
        return out


def apply_stop_rules(completion_ids: Sequence[int], *, rules: StopRules) -> StopOutcome:
    """The final cut for a finished rollout: replay the rules and cut at the first firing token.

    The kept ids end with the token that fired and the forced ids, exactly what a backend that stops
    early emits, so applying it to such a backend's output changes nothing.
    """
    state = rules.start()
    ids = tuple(completion_ids)
    for i, tok in enumerate(ids):
        decision = state.advance(tok)
        if decision is not None:
            return StopOutcome(ids[: i + 1] + decision.force, decision)
        if state.finished:
            break
    return StopOutcome(ids, None)


def stop_metrics(rules_fired: Iterable[StopRule | str | None]) -> dict[str, float]:
    """``rollout/repeat_terminate_triggered_sequences`` and ``rollout/stop_rule/<rule>`` (every rule)."""
    counts = dict.fromkeys(StopRule, 0)
    for rule in rules_fired:
        if rule is not None:
            counts[StopRule(rule)] += 1
    out = {TRIGGERED_KEY: float(sum(counts.values()))}
    out.update({RULE_KEY.format(r.value): float(c) for r, c in counts.items()})
    return out
