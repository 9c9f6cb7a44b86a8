"""Runner for ``Transition: repeat`` scenarios: the stop rules on generated ids, through every adapter.

The rules come from the config path a run takes: ``repeat_terminate`` is a mapping of
``rollout_matching.repeat_terminate`` keys, applied to the minimal config (every key not given keeps its
schema default) and bound with ``coordexp.bind.rollout.bind_stop_rules``. Input (one case, or
``{"cases": [...]}``), ``tokenizer`` as in the parse runner ("char" by default), and one of:

- ``{"text": "..." | "ids": [...], "parse": bool}``: the generated ids token by token through a
  ``StopState``; reports the rule, the firing token and the text up to it, the forced text, and with
  ``parse`` the Parse result of the final cut (``apply_stop_rules``);
- ``{"batch_guard": {"rows": [[...], ...], "prompt_len": p}}``: the hf logits processor on rows of
  prompt + generated ids, called once per generated position as ``generate`` does; reports per row
  whether the next token is forced and which ids stay allowed, on random scores;
- ``{"adapters": [...], "sequences": [text | ids, ...]}``: recorded sequences through each stop adapter:
  ``hf_logits_processor`` (the hf backend's processor, driven by the recorded tokens as a greedy model
  would emit them) and ``final_cut`` (what a backend that cannot stop early gets); per adapter the
  triggered flags, reasons and cut lengths.
"""

from __future__ import annotations

import json
from typing import Any

from coordexp.bind.presets import minimal_config
from coordexp.bind.rollout import bind_stop_rules
from coordexp.core.parse import parse
from coordexp.core.parse_records import Rollout
from coordexp.core.repeat import StopRules, StopRulesConfig, apply_stop_rules
from coordexp.core.tokens import TokenContext
from coordexp.errors import SpecError
from coordexp.spec.runners import each_case
from coordexp.spec.runners.parse import context_for

TRANSITION = "repeat"
RT = "custom.extra.rollout_matching.repeat_terminate"
_MODES = ("text", "ids", "batch_guard", "adapters")
_TAIL = 48  # chars of text shown before a firing token


def stop_rules_for(mapping: dict[str, Any]) -> StopRulesConfig:
    """The bound stop rules of the minimal config with these ``repeat_terminate`` keys set."""
    overrides = [f"{RT}.{key}={json.dumps(value)}" for key, value in _flatten(mapping)]
    return bind_stop_rules(minimal_config("rollout_matching_sft", overrides))


def _flatten(mapping: dict[str, Any], prefix: str = "") -> list[tuple[str, Any]]:
    out: list[tuple[str, Any]] = []
    for key, value in mapping.items():
        if isinstance(value, dict):
            out.extend(_flatten(value, f"{prefix}{key}."))
        else:
            out.append((prefix + key, value))
    return out


def _ids(ctx: TokenContext, value: Any) -> list[int]:
    return ctx.encode(value) if isinstance(value, str) else list(value)


def _stream(case: dict[str, Any], rules: StopRules, ctx: TokenContext) -> dict[str, Any]:
    ids = _ids(ctx, case["text"] if "text" in case else case["ids"])
    out = apply_stop_rules(ids, rules=rules)
    d = out.decision
    view: dict[str, Any] = {"generated": len(ids), "fired": d is not None}
    if d is not None:
        upto = ctx.text_of(ids[: d.at + 1])
        view.update(rule=d.rule.value, at=d.at, at_token=ctx.piece(ids[d.at]), text_up_to_fire=upto[-_TAIL:],
                    forced=ctx.text_of(d.force), kept_tokens=len(out.ids))  # fmt: skip
    if case.get("parse"):
        view["parse"] = _parse_view(out.ids, ctx, d)
    return view


def _parse_view(ids: tuple[int, ...], ctx: TokenContext, decision: Any) -> dict[str, Any]:
    res = parse(Rollout(ids), ctx=ctx)
    return {
        "final_text_tail": ctx.text_of(ids)[-_TAIL:],
        "valid": list(res.valid),
        "dropped": res.n_dropped,
        "prefix_tail": res.prefix_text[-24:],
        "truncated": res.truncated,
        "stopped_by": decision.rule.value if decision is not None else None,
        "triggered": int(decision is not None),
    }


def _batch_guard(spec: dict[str, Any], rules: StopRules, ctx: TokenContext) -> list[dict[str, Any]]:
    import torch

    from coordexp.backends.hf import StopRulesProcessor

    rows, p = spec["rows"], spec["prompt_len"]
    if len({len(r) for r in rows}) != 1:
        raise SpecError("repeat fixture: batch_guard rows must have one length (a left-padded batch)")
    ids = torch.tensor(rows, dtype=torch.long)
    proc = StopRulesProcessor(rules, len(rows), p, replay=False)
    gen = torch.Generator().manual_seed(0)
    for width in range(p, ids.shape[1] + 1):
        scores = torch.randn((len(rows), ctx.vocab_size), generator=gen)
        before = scores.clone()
        after = proc(ids[:, :width], scores)
    out = []
    for r in range(len(rows)):
        allowed = torch.isfinite(after[r]).nonzero().flatten().tolist()
        forced = len(allowed) == 1
        entry: dict[str, Any] = {"forced": forced, "untouched": bool(torch.equal(after[r], before[r]))}
        if forced:
            entry["allowed"] = [ctx.piece(allowed[0])]
            entry["allowed_score"] = float(after[r, allowed[0]])
        out.append(entry)
    return out


def _adapters(case: dict[str, Any], rules: StopRules, ctx: TokenContext) -> dict[str, Any]:
    seqs = [_ids(ctx, s) for s in case["sequences"]]
    runs = {"hf_logits_processor": _through_processor, "final_cut": _through_final_cut}
    unknown = set(case["adapters"]) - set(runs)
    if unknown:
        raise SpecError(f"repeat fixture: unknown stop adapters {sorted(unknown)}; built: {sorted(runs)}")
    report = {}
    for name in case["adapters"]:
        results = [runs[name](ids, rules, ctx) for ids in seqs]
        report[name] = {
            "triggered": [int(rule is not None) for rule, _ in results],
            "reasons": [rule or "none" for rule, _ in results],
            "kept_tokens": [len(kept) for _, kept in results],
            "final_tails": [ctx.text_of(kept)[-24:] for _, kept in results],
        }
    return report


def _through_final_cut(ids: list[int], rules: StopRules, ctx: TokenContext) -> tuple[str | None, tuple[int, ...]]:
    out = apply_stop_rules(ids, rules=rules)
    return (out.rule.value if out.rule else None), out.ids


def _through_processor(ids: list[int], rules: StopRules, ctx: TokenContext) -> tuple[str | None, tuple[int, ...]]:
    """A greedy decode loop whose "model" prefers the recorded next token (then EOS), with the processor on."""
    import torch

    from coordexp.backends.hf import StopRulesProcessor

    proc = StopRulesProcessor(rules, 1, 0, replay=False)
    emitted: list[int] = []
    while len(emitted) < len(ids) + 8:
        scores = torch.zeros((1, ctx.vocab_size))
        scores[0, ids[len(emitted)] if len(emitted) < len(ids) else ctx.im_end_id] = 1.0
        tok = int(proc(torch.tensor([emitted], dtype=torch.long).view(1, -1), scores).argmax())
        emitted.append(tok)
        if tok in rules.eos_ids:
            break
    proc.finish(emitted[-1:])
    state = proc.batch.states[0]
    return (state.decision.rule.value if state.decision else None), tuple(emitted)


def _run_case(case: dict[str, Any]) -> Any:
    modes = [m for m in _MODES if m in case]
    if len(modes) != 1 or "repeat_terminate" not in case:
        raise SpecError(f"repeat fixture case needs repeat_terminate and exactly one of {_MODES}; got {sorted(case)}")
    ctx = context_for(case.get("tokenizer"))
    rules = StopRules(stop_rules_for(case["repeat_terminate"]), ctx)
    if modes[0] == "batch_guard":
        return {"label": case.get("label"), "rows": _batch_guard(case["batch_guard"], rules, ctx)}
    if modes[0] == "adapters":
        return _adapters(case, rules, ctx)
    view = _stream(case, rules, ctx)
    return {"label": case["label"], **view} if "label" in case else view


def run(data: dict[str, Any]) -> Any:
    return each_case(data, _run_case, transition=TRANSITION)
