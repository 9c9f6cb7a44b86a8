"""Recorded runs made by construction, in every legacy format: a degenerate one and a healthy one.

    python -m coordexp.replay.fixtures --out DIR     # DIR/<run>/<format>/...

Why made here and not copied from a real run: every count of the diagnosis is known from the
construction (``expected``), so a test of the report's numbers cannot agree with itself by accident.
The degenerate run has each of seed 000's failure modes once:

- ``spam``: the GT car and flagpole, then ``SPAM`` copies of one flagpole box (object spam);
- ``slots``: one valid object, then objects with plain digits, CJK and leading-space values in bbox
  slots (``SLOT_VALUES``);
- ``cut``: the output cut by the budget in the middle of a desc string (truncation mid-string);
- ``empty``: an image without GT objects, answered with two objects (all false positives).

The runs are written as a coordexp run folder (``rollouts.jsonl`` with its ``config.yaml`` and data) and in
every legacy format. The healthy run answers every image with exactly its GT (and ``{}`` for the empty image). Coordinates
are written on a 1000 x 1000 image, so pixel and norm1000 values coincide and the legacy pixel files
convert back without rounding.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from pathlib import Path

import attrs

from coordexp.core.coordjson import GTObject, dumps, object_value, serialize
from coordexp.core.keys import GeomType
from coordexp.core.tokens import IM_END

SIZE = 1000  # px; bins == pixels on this image
SPAM = 12
SLOT_VALUES = (("720", "0"), ("尼斯", "尼斯", "尼斯"), (" Country",))  # plain digits, non-ASCII, leading space
FORMATS = ("rollouts", "gt_vs_pred", "vllm_debug", "monitor", "monitor_legacy")
MAX_NEW_TOKENS = 512  # the fixture run's budget: above every completion (the cut one is labelled "length")
CAR, FLAG = (100, 100, 300, 300), (600, 50, 650, 400)


@attrs.frozen
class FixtureSample:
    name: str
    gt: tuple[GTObject, ...]
    answer: dict  # the answer as the model emitted it (the legacy parsed dict)
    cut_text: str | None = None  # the raw text when the budget cut it (not a complete answer)


def _obj(i: int, desc: str, box: Sequence[int]) -> GTObject:
    return GTObject(i, desc, GeomType.BBOX, tuple(box))


def _answer(objects: Sequence[GTObject]) -> dict:
    return {f"object_{o.index}": object_value(o) for o in objects}


def degenerate() -> tuple[FixtureSample, ...]:
    gt = (_obj(1, "car", CAR), _obj(2, "flagpole", FLAG))
    spam = _answer([_obj(1, "car", CAR)] + [_obj(2 + k, "flagpole", FLAG) for k in range(SPAM)])
    slots = _answer([_obj(1, "car", CAR)])
    for n, values in enumerate(SLOT_VALUES, 2):
        box = list(values) + [f"<|coord_{500 + k}|>" for k in range(4 - len(values))]
        slots[f"object_{n}"] = {"desc": "sign", "bbox_2d": box}
    cut_answer = _answer([_obj(1, "car", CAR)])
    cut_text = serialize([_obj(1, "car", CAR)])[:-1] + ', "object_2": {"desc": "flagp'
    fps = _answer([_obj(1, "tray", (10, 10, 90, 90)), _obj(2, "book", (200, 200, 260, 280))])
    return (FixtureSample("spam", gt, spam), FixtureSample("slots", gt, slots),
            FixtureSample("cut", gt, cut_answer, cut_text), FixtureSample("empty", (), fps))


def healthy() -> tuple[FixtureSample, ...]:
    gt = (_obj(1, "car", CAR), _obj(2, "flagpole", FLAG))
    one = (_obj(1, "dog", (400, 500, 700, 900)),)
    return (FixtureSample("two", gt, _answer(gt)), FixtureSample("one", one, _answer(one)),
            FixtureSample("two_again", gt, _answer(gt)), FixtureSample("empty", (), {}))


RUNS = {"degenerate": degenerate, "healthy": healthy}


def expected(run: str, fmt: str) -> dict[str, float]:
    """The diagnosis figures the construction implies (see the module docstring)."""
    if run == "healthy":
        return {"diagnosis/samples": 4, "diagnosis/valid_json_rate": 1.0, "diagnosis/truncated": 0,
                "diagnosis/dropped_total": 0, "diagnosis/slot_tokens_total": 0, "diagnosis/max_same_desc": 1,
                "diagnosis/near_duplicate_pairs": 0, "diagnosis/pred_gt_ratio": 1.0, "diagnosis/precision": 1.0,
                "diagnosis/recall": 1.0, "diagnosis/f1": 1.0, "diagnosis/matched_iou_mean": 1.0}
    n_slots = len(SLOT_VALUES)
    # valid predictions: spam 1 + SPAM, slots 1, cut 1, empty 2; GT: 2 + 2 + 2 + 0
    preds, gts, matched = (1 + SPAM) + 1 + 1 + 2, 6, 2 + 1 + 1
    # a text cut mid-object leaves that object unclosed: the parser drops it (key_invalid); the legacy
    # gt_vs_pred file only kept the salvaged dict, so it has no such object
    cut_drop = 0 if fmt == "gt_vs_pred" else 1
    precision, recall = matched / preds, matched / gts
    return {
        "diagnosis/samples": 4, "diagnosis/valid_json_rate": 3 / 4, "diagnosis/truncated": 1,
        "diagnosis/dropped/non_coord_token": n_slots, "diagnosis/dropped/key_invalid": cut_drop,
        "diagnosis/dropped_total": n_slots + cut_drop, "diagnosis/raw_objects": preds + n_slots + cut_drop,
        "diagnosis/slot_tokens/plain_digits": len(SLOT_VALUES[0]), "diagnosis/slot_tokens/non_ascii": len(SLOT_VALUES[1]),
        "diagnosis/slot_tokens/leading_space": len(SLOT_VALUES[2]), "diagnosis/slot_tokens/other": 0,
        "diagnosis/slot_tokens_total": sum(len(v) for v in SLOT_VALUES), "diagnosis/max_same_desc": SPAM,
        "diagnosis/near_duplicate_pairs": SPAM * (SPAM - 1) // 2, "diagnosis/pred_gt_ratio": preds / gts,
        "diagnosis/precision": precision, "diagnosis/recall": recall,
        "diagnosis/f1": 2 * precision * recall / (precision + recall), "diagnosis/matched_iou_mean": 1.0,
    }


def _text(s: FixtureSample) -> str:
    return s.cut_text if s.cut_text is not None else dumps(s.answer) + IM_END


def _pixels(objects: Sequence[GTObject]) -> list[dict]:
    return [{"type": "bbox_2d", "points": list(o.points), "desc": o.desc, "score": 1.0} for o in objects]


def _valid_preds(s: FixtureSample) -> list[GTObject]:
    """What the legacy strict parse kept: objects whose four slots are all coord tokens."""
    out = []
    for key, value in s.answer.items():
        box = value["bbox_2d"]
        if all(isinstance(v, str) and v.startswith("<|coord_") for v in box):
            out.append(_obj(int(key.split("_")[1]), value["desc"], [int(v[8:-2]) for v in box]))
    return out


def write_gt_vs_pred(samples: Sequence[FixtureSample], folder: Path) -> Path:
    lines = []
    for s in samples:
        lines.append(json.dumps({
            "image": f"images/{s.name}.jpg", "width": SIZE, "height": SIZE, "mode": "bbox", "coord_mode": "pixel",
            "gt": _pixels(s.gt), "pred": _pixels(_valid_preds(s)), "raw_output_json": s.answer,
            "raw_special_tokens": [], "raw_ends_with_im_end": s.cut_text is None, "errors": [],
        }, ensure_ascii=False))
    path = folder / "gt_vs_pred.jsonl"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def write_vllm_debug(samples: Sequence[FixtureSample], folder: Path) -> Path:
    """Two samples per event file, ASCII-escaped as the legacy server wrote them."""
    for event, start in enumerate(range(0, len(samples), 2)):
        rows = [{"gt_text": serialize(s.gt) if s.gt else "{}", "rollout_text": _text(s)} for s in samples[start:start + 2]]
        (folder / f"step_000010_event_{event:03d}.json").write_text(
            json.dumps({"global_step": 10, "samples": rows}, ensure_ascii=True, indent=2), encoding="utf-8")
    return folder


def write_monitor(samples: Sequence[FixtureSample], folder: Path, *, legacy: bool) -> Path:
    """coordexp's monitor dump (``points``) or the legacy trainer's (``points_norm1000``)."""
    points = "points_norm1000" if legacy else "points"
    rows = [{"sample_id": s.name, "rollout_text": _text(s),
             "gt_objects": [{"index": i, "desc": o.desc, "geom_type": o.geom_type.value, points: list(o.points)}
                            for i, o in enumerate(s.gt)], "width": SIZE, "height": SIZE} for s in samples]
    payload = {"global_step": 10, "samples": rows}
    payload["meta" if legacy else "rank"] = {"rollout_backend": "vllm"} if legacy else 0
    (folder / "step_000010.json").write_text(json.dumps(payload, ensure_ascii=True, indent=2), encoding="utf-8")
    return folder


def _run_config(folder: Path) -> dict:
    """The recording run's config: the tiny model, its data file in ``folder``, HF rollouts."""
    return {
        "global_max_length": 1024,
        "model": {"model": "tiny", "torch_dtype": "float32", "attn_impl": "sdpa"},
        "training": {"per_device_train_batch_size": 1, "effective_batch_size": 4, "max_steps": 1, "seed": 0,
                     "eval_strategy": "no", "save_strategy": "no",
                     "bf16": False, "gradient_checkpointing": False},
        "custom": {"trainer_variant": "rollout_matching_sft", "train_jsonl": str(folder / "train.jsonl"),
                   "extra": {"rollout_matching": {"rollout_backend": "hf", "max_new_tokens": MAX_NEW_TOKENS,
                                                  "record_rollouts": True}}},
    }


def write_rollouts(samples: Sequence[FixtureSample], folder: Path) -> Path:
    """A coordexp run folder: config.yaml, its data (train.jsonl + images) and rollouts.jsonl (step 0)."""
    import yaml
    from PIL import Image

    from coordexp.config import config_to_yaml, load_config
    from coordexp.replay.formats import encode_text, tokenizer_context
    from coordexp.telemetry.recording import RolloutRecorder, config_hash

    (folder / "images").mkdir(exist_ok=True)
    records = []
    for s in samples:
        Image.new("RGB", (SIZE, SIZE), (200, 200, 200)).save(folder / "images" / f"{s.name}.png")
        records.append(json.dumps({"images": [f"images/{s.name}.png"], "width": SIZE, "height": SIZE,
                                   "objects": [{"desc": o.desc, "bbox_2d": list(o.points)} for o in s.gt]}))
    (folder / "train.jsonl").write_text("\n".join(records) + "\n", encoding="utf-8")
    (folder / "config.yaml").write_text(yaml.safe_dump(_run_config(folder)), encoding="utf-8")
    resolved = config_to_yaml(load_config(folder / "config.yaml"))
    ctx = tokenizer_context()
    path = folder / "rollouts.jsonl"
    path.unlink(missing_ok=True)
    recorder = RolloutRecorder(path, config_hash=config_hash(resolved))
    for k, s in enumerate(samples):
        recorder.record(sample_id=f"train#{k}", step=0, prompt_ids=[], completion_ids=encode_text(_text(s), ctx),
                        finish_reason="length" if s.cut_text is not None else "stop", stop_rule=None)
    recorder.close()
    return folder


def write_all(out: Path) -> dict[tuple[str, str], Path]:
    """Every run in every format under ``out/<run>/<format>``; returns the input path of each."""
    paths = {}
    for run, build in RUNS.items():
        samples = build()
        for fmt in FORMATS:
            folder = out / run / fmt
            folder.mkdir(parents=True, exist_ok=True)
            if fmt == "rollouts":
                paths[(run, fmt)] = write_rollouts(samples, folder)
            elif fmt == "gt_vs_pred":
                paths[(run, fmt)] = write_gt_vs_pred(samples, folder)
            elif fmt == "vllm_debug":
                paths[(run, fmt)] = write_vllm_debug(samples, folder)
            else:
                paths[(run, fmt)] = write_monitor(samples, folder, legacy=fmt == "monitor_legacy")
    return paths


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m coordexp.replay.fixtures", description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, required=True)
    args = p.parse_args(argv)
    for (run, fmt), path in write_all(args.out).items():
        print(f"{run:10s} {fmt:15s} {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
