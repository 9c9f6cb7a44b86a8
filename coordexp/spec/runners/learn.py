"""Runner for ``learn``: TrainTargets -> the learner's segments -> one packed row of the tiny Qwen3-VL.

Input (one case, or ``{"cases": [case, ...]}``)::

    {"variant": "rollout_matching_sft",            (the config variant whose match / target / prefix-policy
     "config": ["custom.extra....=..."],             records build the targets; --set style overrides, optional)
     "cap": 40,                                     (tokens, the packing length; optional, none = unbounded)
     "samples": [sample, ...]}                      (in concatenation order)

    sample = {"key": "s0",                          (segment key and sample id; default s<index>)
              "prompt": prompt,                     (what the rollout was generated from; its encoding is the
                                                     one the learner gets, as coordexp.runtime hands it on)
              "fresh_prompt": prompt,               (optional: a fresh teacher-forced encoding, compared only)
              "rollout": {"text" | "pred" [+ "cut"], "gt": [...]},   (as coordexp.spec.runners._samples)
              "edit": {"labels": [...], ...}}       (optional raw supervision arrays replacing the target's)
    prompt = {"text": "...", "system": "...", "image": {"width": W, "height": H}}   (system, image optional)

Each rollout runs through the real core chain (parse, prefix policy, match, BuildTarget) with the tiny
model's own tokenizer (``fixture-bpe``), each prompt through the tiny processor and chat template
(``learn.encode.encode_prompt``), then ``learn.segments.target_segment`` and ``learn.packed.pack_segments``.
``edit`` replaces supervision fields of a real TrainTarget (labels, ce_weights, coord_positions,
coord_target_bins, coord_is_prefix), to reach the learner's own refusals.

Output: per segment its offset, lengths and segment-local coord slots (plus how its prompt ids compare with
the rollout's and the fresh encoding); the row's ``cu_seqlens``, coord positions / bins / prefix flags /
batch index, one line per row token (``pos seg:local piece supervision``), and whether every row field equals
the segments' own fields laid side by side; or the expected ``PackingError`` / ``TargetError``.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from typing import Any

from coordexp.errors import LossError, PackingError, SpecError, TargetError
from coordexp.spec.runners import each_case, expected_error
from coordexp.spec.runners._samples import rollout_text
from coordexp.spec.runners.parse import context_for

TRANSITION = "learn"

_CASE_KEYS = {"variant", "config", "cap", "samples"}
_SAMPLE_KEYS = {"key", "prompt", "fresh_prompt", "rollout", "edit"}
_PROMPT_KEYS = {"text", "system", "image"}
_ROLLOUT_KEYS = {"text", "pred", "cut", "gt"}
_EDITABLE = ("labels", "ce_weights", "coord_positions", "coord_target_bins", "coord_is_prefix")
_IMAGE_COLOUR = (200, 120, 40)  # any fixed colour: only the image size shapes the prompt


@functools.lru_cache(maxsize=1)
def _tiny() -> Any:
    """The tiny Qwen3-VL, built once per process: only its processor and ``get_rope_index`` are used."""
    from coordexp.data.tiny import build_tiny_qwen3vl

    return build_tiny_qwen3vl(seed=0)


def _check_keys(data: Any, allowed: set[str], where: str) -> None:
    if not isinstance(data, Mapping) or not set(data) <= allowed:
        raise SpecError(f"learn fixture {where}: keys must be among {sorted(allowed)}, got {data!r}")


def _messages(prompt: Mapping[str, Any], where: str) -> list[dict[str, Any]]:
    from PIL import Image

    _check_keys(prompt, _PROMPT_KEYS, where)
    if "text" not in prompt:
        raise SpecError(f"learn fixture {where}: a prompt needs 'text'")
    content: list[dict[str, Any]] = []
    if "image" in prompt:
        size = prompt["image"]
        if not isinstance(size, Mapping) or set(size) != {"width", "height"}:
            raise SpecError(f"learn fixture {where}: 'image' is {{'width': W, 'height': H}} (pixels), got {size!r}")
        content.append({"type": "image", "image": Image.new("RGB", (size["width"], size["height"]), _IMAGE_COLOUR)})
    content.append({"type": "text", "text": prompt["text"]})
    system = [{"role": "system", "content": prompt["system"]}] if "system" in prompt else []
    return [*system, {"role": "user", "content": content}]


def _target(sample: Mapping[str, Any], sid: str, cfgs: tuple, index: int) -> Any:
    """The sample's TrainTarget from the real core chain, with ``edit`` applied."""
    import attrs

    from coordexp.core.coordjson import Layout
    from coordexp.core.parse_records import Rollout
    from coordexp.core.target_pipeline import run_target_step
    from coordexp.core.target_records import TargetSample
    from coordexp.data.jsonl import gt_objects

    match_cfg, target_cfg, policy_cfg = cfgs
    rollout = sample.get("rollout")
    _check_keys(rollout, _ROLLOUT_KEYS, f"sample {index} rollout")
    ctx = context_for("fixture-bpe")
    ids = tuple(ctx.encode(rollout_text(rollout, index)))
    gt = gt_objects(rollout.get("gt") or [], where=f"fixture sample {sid}", bbox_only=target_cfg.bbox_only)
    trace = run_target_step(Rollout(ids, sample_id=sid), TargetSample(sid, gt, Layout.OBJECT_N), ctx=ctx,
                            match_cfg=match_cfg, target_cfg=target_cfg, policy_cfg=policy_cfg)
    edit = sample.get("edit", {})
    _check_keys(edit, set(_EDITABLE), f"sample {index} edit")
    return attrs.evolve(trace.target, **{k: tuple(v) for k, v in edit.items()})


def _prompt_report(seg: Any, rollout: Any, fresh: Any | None) -> dict[str, Any]:
    """How the segment's prompt ids relate to the rollout's encoding and to a fresh re-encoding."""
    import torch

    n = rollout.prompt_len
    out: dict[str, Any] = {"rollout_prompt_len": n,
                           "segment_prompt_is_rollout_prompt": torch.equal(seg.input_ids[:n], rollout.input_ids)}
    if rollout.pixel_values is not None:
        out["segment_pixels_are_rollout_pixels"] = seg.pixel_values is rollout.pixel_values
    if fresh is not None:
        same_len = fresh.prompt_len == n
        out["fresh_prompt_len"] = fresh.prompt_len
        out["fresh_equals_rollout_prompt"] = same_len and torch.equal(fresh.input_ids, rollout.input_ids)
        out["segment_prompt_is_fresh_prompt"] = same_len and torch.equal(seg.input_ids[:n], fresh.input_ids)
    return out


def _sample_segment(sample: Mapping[str, Any], index: int, cfgs: tuple) -> tuple[Any, dict[str, Any]]:
    from coordexp.learn.encode import encode_prompt
    from coordexp.learn.segments import target_segment

    _check_keys(sample, _SAMPLE_KEYS, f"sample {index}")
    sid = str(sample.get("key", f"s{index}"))
    processor = _tiny().processor
    if "prompt" not in sample:
        raise SpecError(f"learn fixture sample {index}: 'prompt' is required")
    prompt = encode_prompt(processor, _messages(sample["prompt"], f"sample {index} prompt"))
    fresh = None
    if "fresh_prompt" in sample:
        fresh = encode_prompt(processor, _messages(sample["fresh_prompt"], f"sample {index} fresh_prompt"))
    target = _target(sample, sid, cfgs, index)
    seg = target_segment(prompt, target, key=sid)
    return seg, {
        "key": sid,
        "length": seg.length,
        "prompt": _prompt_report(seg, prompt, fresh),
        "target": {"y_train_text": context_for("fixture-bpe").text_of(target.y_train_ids),
                   "prefix_len": target.prefix_len, "train_len": target.train_len},
        "coord_positions": seg.coord_positions.tolist(),  # segment-local token idx
        "coord_bins": seg.coord_bins.tolist(),
        "coord_is_prefix": seg.coord_is_prefix.tolist(),
    }


def _supervision(token: int, label: int, weight: float, coord: tuple[int, bool] | None) -> str:
    from coordexp.learn.losses import IGNORE_INDEX

    parts = []
    if label != IGNORE_INDEX:
        parts.append("ce" if label == token else f"ce label={label}")
        if weight != 1.0:
            parts.append(f"w={weight:g}")
    elif weight != 0.0:
        parts.append(f"no label, w={weight:g}")
    if coord is not None:
        parts.append(f"coord {coord[0]} {'prefix' if coord[1] else 'tail'}")
    return " ".join(parts) or "-"


def _token_lines(row: Any, segments: Sequence[Any]) -> list[str]:
    """One line per row token: position, segment:local position, piece, what supervises it."""
    ctx = context_for("fixture-bpe")
    ids = row.inputs["input_ids"][0].tolist()
    labels, weights = row.labels[0].tolist(), row.ce_weights[0].tolist()
    coords = {int(p): (int(b), bool(f)) for p, b, f in zip(row.coord_positions, row.coord_bins, row.coord_is_prefix)}
    owner = [(i, local) for i, s in enumerate(segments) for local in range(s.length)]
    return [
        f"{pos:>3} {seg}:{local:<3} {ctx.piece(tok)!r:<18} {_supervision(tok, labels[pos], weights[pos], coords.get(pos))}"
        for pos, (tok, (seg, local)) in enumerate(zip(ids, owner))
    ]


def _side_by_side(row: Any, segments: Sequence[Any]) -> dict[str, bool]:
    """Whether each row field is the segments' own field concatenated (coord positions shifted by offsets)."""
    import torch

    cu = row.cu_seqlens
    cat = {
        "input_ids": (row.inputs["input_ids"][0], torch.cat([s.input_ids for s in segments])),
        "labels": (row.labels[0], torch.cat([s.labels for s in segments])),
        "ce_weights": (row.ce_weights[0], torch.cat([s.ce_weights.float() for s in segments])),
        "coord_positions": (row.coord_positions, torch.cat([s.coord_positions + cu[i] for i, s in enumerate(segments)])),
        "coord_bins": (row.coord_bins, torch.cat([s.coord_bins for s in segments])),
        "coord_is_prefix": (row.coord_is_prefix, torch.cat([s.coord_is_prefix for s in segments])),
    }
    return {name: torch.equal(got, want) for name, (got, want) in cat.items()}


def _run_one(case: Mapping[str, Any]) -> dict[str, Any]:
    from coordexp.bind import bind_match, bind_prefix_policy, bind_target, minimal_config
    from coordexp.learn.packed import pack_segments

    _check_keys(case, _CASE_KEYS, "case")
    if "variant" not in case or not case.get("samples"):
        raise SpecError("learn fixture case: 'variant' and a non-empty 'samples' list are required")
    cfg = minimal_config(case["variant"], tuple(case.get("config", ())))
    cfgs = (bind_match(cfg), bind_target(cfg), bind_prefix_policy(cfg))
    built = [_sample_segment(s, i, cfgs) for i, s in enumerate(case["samples"])]
    segments = [seg for seg, _ in built]
    row = pack_segments(segments, model=_tiny().model, cap=case.get("cap"))
    reports = [{"offset": row.cu_seqlens[i], **rep} for i, (_, rep) in enumerate(built)]
    return {
        "segments": reports,
        "row": {
            "length": int(row.inputs["input_ids"].shape[1]),
            "cu_seqlens": list(row.cu_seqlens),
            "coord_positions": row.coord_positions.tolist(),
            "coord_bins": row.coord_bins.tolist(),
            "coord_is_prefix": row.coord_is_prefix.tolist(),
            "coord_batch_index": row.coord_batch_index.tolist(),
            "tokens": _token_lines(row, segments),
        },
        "row_equals_segments_side_by_side": _side_by_side(row, segments),
    }


def _run_case(case: Any) -> Any:
    try:
        return _run_one(case)
    except (PackingError, TargetError, LossError) as exc:  # the learner's refusals, reported per case
        return expected_error(exc)


def run(data: dict[str, Any]) -> Any:
    return each_case(data, _run_case, transition=TRANSITION)
