"""Monitor dumps: a few samples per dump step, as JSON and Markdown (seed 002, reference rollout §12.3).

What a reader checks in a dump is whether the teacher target makes sense for the rollout: the prompt
messages (images as path and size, never pixels), the raw rollout, the append-ready prefix, the
training target (prefix + FN append + EOS), GT and predicted objects in norm1000 and the match with
its IoUs. Files: ``<out_dir>/step_000012.json`` (+ ``.md``); ranks other than 0, when allowed to dump,
add ``.rank<r>`` so they never overwrite each other.

Every ``custom.extra.rollout_matching.monitor_dump`` key acts here: ``enabled`` (no dumper at all),
``every_steps`` / ``dump_first_step`` (which steps), ``only_world_process_zero`` (which ranks),
``max_events`` (how many dumps per run, counted from the files already in ``out_dir`` so a resumed run
continues the count), ``max_samples``, ``max_text_chars``, ``out_dir`` and ``write_markdown``.
"""

from __future__ import annotations

import json
import os
import re
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import attrs

from coordexp.config.schema_rollout import MonitorDumpConfig
from coordexp.core.coordjson import GTObject
from coordexp.core.match import MatchResult
from coordexp.core.parse_records import ParseResult
from coordexp.core.prefix_policy import PrefixView
from coordexp.core.target_records import TrainTarget
from coordexp.core.tokens import TokenContext
from coordexp.serde import unstructure

# Every monitor_dump key acts in MonitorPolicy.from_config (checked by coordexp.bind.reach).
CONFIG_READS = (
    "custom.extra.rollout_matching.monitor_dump.enabled",
    "custom.extra.rollout_matching.monitor_dump.every_steps",
    "custom.extra.rollout_matching.monitor_dump.dump_first_step",
    "custom.extra.rollout_matching.monitor_dump.only_world_process_zero",
    "custom.extra.rollout_matching.monitor_dump.max_events",
    "custom.extra.rollout_matching.monitor_dump.max_samples",
    "custom.extra.rollout_matching.monitor_dump.max_text_chars",
    "custom.extra.rollout_matching.monitor_dump.out_dir",
    "custom.extra.rollout_matching.monitor_dump.write_markdown",
)
TRUNCATED = "...<truncated>"
DUMP_DIR = "monitor_dumps"


@attrs.frozen
class MessagePart:
    kind: str  # "text" | "image"
    text: str | None = None
    image: str | None = None  # file path, or "(in-memory image)"
    width: int | None = None  # px
    height: int | None = None  # px


@attrs.frozen
class MessageSummary:
    role: str
    parts: tuple[MessagePart, ...] = attrs.field(converter=tuple)


def summarize_messages(
    messages: Sequence[Mapping[str, Any]], image_sources: Sequence[object] = ()
) -> tuple[MessageSummary, ...]:
    """Chat messages (``coordexp.data.prompts.build_messages``) with each image replaced by its source and size.

    ``image_sources`` are the sample's image paths in order (``Sample.images``); an image part takes
    the next one, and its pixel size from the decoded image when it has one.
    """
    sources = iter(image_sources)
    out = []
    for msg in messages:
        content = msg.get("content")
        parts = []
        for item in content if isinstance(content, list) else [{"type": "text", "text": content}]:
            if item.get("type") == "image":
                parts.append(_image_part(item.get("image"), next(sources, None)))
            else:
                parts.append(MessagePart("text", text=str(item.get("text", ""))))
        out.append(MessageSummary(str(msg.get("role")), tuple(parts)))
    return tuple(out)


def _image_part(image: object, source: object) -> MessagePart:
    """A path source names the file; a PIL source (in-memory images) or none has no name to give."""
    name = str(source) if isinstance(source, (str, os.PathLike)) else "(in-memory image)"
    size = getattr(image, "size", None) or getattr(source, "size", None)
    return MessagePart("image", image=name, width=size[0] if size else None, height=size[1] if size else None)


@attrs.frozen
class MonitorObject:
    index: int  # 0-based position: GT order, or the predictions Match saw
    desc: str
    geom_type: str
    points: tuple[int, ...] = attrs.field(converter=tuple)  # norm1000 x, y, ...
    key: str | None = None  # "object_3" / "objects[2]" for predictions


@attrs.frozen
class MonitorMatch:
    pred_i: int
    gt_i: int
    iou: float


@attrs.frozen
class MonitorSample:
    """One sample of a dump; ``from_records`` builds it from the step's core records."""

    sample_id: str
    messages_summary: tuple[MessageSummary, ...] = attrs.field(converter=tuple)
    rollout_text: str
    prefix_text: str
    target_text: str  # Y_train decoded (prefix + FN append + EOS); "" when no target was built
    gt_objects: tuple[MonitorObject, ...] = attrs.field(converter=tuple)
    pred_objects: tuple[MonitorObject, ...] = attrs.field(converter=tuple)
    matches: tuple[MonitorMatch, ...] = attrs.field(converter=tuple)
    stats: Mapping[str, float] = attrs.field(factory=dict)
    append_text: str = ""
    fp_pred_indices: tuple[int, ...] = attrs.field(default=(), converter=tuple)
    fn_gt_indices: tuple[int, ...] = attrs.field(default=(), converter=tuple)
    dropped_reason: str | None = None  # why a stage dropped the sample, if it did

    @classmethod
    def from_records(
        cls, *, sample_id: str, messages_summary: Sequence[MessageSummary], parse: ParseResult, view: PrefixView,
        match: MatchResult, gt: Sequence[GTObject], ctx: TokenContext, target: TrainTarget | None = None,
        dropped_reason: str | None = None,
    ) -> MonitorSample:
        """From Parse (raw rollout), the prefix view (what Match saw), Match, the GT and the target."""
        preds = tuple(MonitorObject(i, o.desc, str(o.geom_type), o.coord_bins, o.key)
                      for i, o in enumerate(view.parse.valid_objects))
        gts = tuple(MonitorObject(i, g.desc, str(g.geom_type), g.points) for i, g in enumerate(gt))
        n_pred, n_gt, n_match = len(preds), len(gts), len(match.matched_pairs)
        stats = {
            "valid_pred_objects": n_pred, "gt_objects": n_gt, "matched": n_match,
            "parse_dropped_invalid": parse.n_dropped, "parse_truncated": int(parse.truncated),
            "gating_rejections": match.gating_rejections,
            "precision": n_match / n_pred if n_pred else 0.0, "recall": n_match / n_gt if n_gt else 0.0,
            "matched_iou_mean": match.matched_iou_sum / n_match if n_match else 0.0,
        }
        if target is not None:
            stats.update({"matched_for_supervision": target.counters.matched_for_supervision,
                          "fn_appended": target.counters.fn_appended, "train_len": target.train_len})
        return cls(
            sample_id=sample_id, messages_summary=tuple(messages_summary), rollout_text=parse.response_text,
            prefix_text=view.parse.prefix_text, target_text=ctx.text_of(target.y_train_ids) if target else "",
            gt_objects=gts, pred_objects=preds,
            matches=tuple(MonitorMatch(p, g, iou) for (p, g), iou in zip(match.matched_pairs, match.matched_ious)),
            stats=stats, append_text=target.append_text if target else "",
            fp_pred_indices=match.fp_pred_indices, fn_gt_indices=match.fn_gt_indices, dropped_reason=dropped_reason,
        )


@attrs.frozen
class MonitorPolicy:
    """The monitor_dump knobs with their config-level defaults resolved."""

    every_steps: int = attrs.field(validator=attrs.validators.ge(1))
    dump_first_step: bool
    only_world_process_zero: bool
    max_events: int = attrs.field(validator=attrs.validators.ge(0))  # 0 = unlimited
    max_samples: int = attrs.field(validator=attrs.validators.ge(1))
    max_text_chars: int = attrs.field(validator=attrs.validators.ge(1))
    out_dir: Path
    write_markdown: bool

    @classmethod
    def from_config(cls, cfg: MonitorDumpConfig, *, logging_steps: int, logging_first_step: bool,
                    run_dir: Path) -> MonitorPolicy | None:
        """None when dumps are off; ``out_dir`` null means ``<run folder>/monitor_dumps``, relative is under it."""
        if not cfg.enabled:
            return None
        out = Path(cfg.out_dir) if cfg.out_dir else Path(DUMP_DIR)
        return cls(
            every_steps=cfg.every_steps if cfg.every_steps is not None else logging_steps,
            dump_first_step=cfg.dump_first_step if cfg.dump_first_step is not None else logging_first_step,
            only_world_process_zero=cfg.only_world_process_zero, max_events=cfg.max_events,
            max_samples=cfg.max_samples, max_text_chars=cfg.max_text_chars,
            out_dir=out if out.is_absolute() else Path(run_dir) / out, write_markdown=cfg.write_markdown,
        )


class MonitorDumper:
    """Decides which optimizer steps dump and writes the files; one per process."""

    def __init__(self, policy: MonitorPolicy, *, rank: int = 0) -> None:
        self.policy, self.rank = policy, rank
        self._suffix = "" if rank == 0 else f".rank{rank}"
        self._dumped: set[int] = set()
        pattern = re.compile(rf"^step_(\d{{6,}}){re.escape(self._suffix)}\.json$")
        existing = [m for p in policy.out_dir.glob("step_*.json") if (m := pattern.match(p.name))]
        self.events = len(existing)  # a resumed run keeps counting toward max_events
        self._dumped.update(int(m.group(1)) for m in existing)

    def _may_dump(self, step: int) -> bool:
        p = self.policy
        if p.only_world_process_zero and self.rank != 0:
            return False
        if p.max_events and self.events >= p.max_events:
            return False
        return step not in self._dumped

    def should_dump(self, step: int) -> bool:
        p = self.policy
        if not self._may_dump(step):
            return False
        if step == 0:
            return p.dump_first_step
        return step % p.every_steps == 0

    def dump(self, step: int, samples: Sequence[MonitorSample], *, meta: Mapping[str, Any] | None = None,
             epoch: float | None = None, overdue: bool = False) -> list[Path]:
        """Write the step's dump if it is due (returns the files written, none when not due).

        ``overdue``: a dump that fell due on a step without rollouts (Stage-2 AB Channel A) is written on the
        next step that has them, still within ``max_events`` and the rank rule.
        """
        if not (self.should_dump(step) or (overdue and self._may_dump(step))):
            return []
        payload = self.payload(step, samples, meta=meta or {}, epoch=epoch)
        self.policy.out_dir.mkdir(parents=True, exist_ok=True)
        stem = self.policy.out_dir / f"step_{step:06d}{self._suffix}"  # ".rank1" is no file suffix to replace
        written = [_write_atomic(Path(f"{stem}.json"), json.dumps(payload, ensure_ascii=True, indent=2) + "\n")]
        if self.policy.write_markdown:
            written.append(_write_atomic(Path(f"{stem}.md"), render_markdown(payload)))
        self._dumped.add(step)
        self.events += 1
        return written

    def payload(self, step: int, samples: Sequence[MonitorSample], *, meta: Mapping[str, Any],
                epoch: float | None) -> dict[str, Any]:
        n = self.policy.max_text_chars
        rows = []
        for s in samples[: self.policy.max_samples]:
            row = unstructure(s)
            for field in ("rollout_text", "prefix_text", "target_text", "append_text"):
                row[field] = clip(row[field], n)
            for msg in row["messages_summary"]:
                for part in msg["parts"]:
                    if part["text"] is not None:
                        part["text"] = clip(part["text"], n)
            rows.append(row)
        return {"global_step": step, "epoch": epoch, "time": time.time(), "rank": self.rank, "meta": dict(meta),
                "samples": rows}


def clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[:limit] + TRUNCATED


def _write_atomic(path: Path, text: str) -> Path:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)
    return path


def _block(text: str) -> str:
    return "```\n" + text.encode("ascii", "backslashreplace").decode("ascii").replace("```", "`\\``") + "\n```"


def render_markdown(payload: Mapping[str, Any]) -> str:
    """The Markdown view of a dump payload (non-ASCII escaped, like the JSON)."""
    lines = [f"# Rollout-Matching Monitor Dump (global_step={payload['global_step']})", "", "## Meta", "",
             "```json", json.dumps(payload["meta"], ensure_ascii=True, indent=2), "```"]
    for i, s in enumerate(payload["samples"]):
        lines += ["", f"## Sample {i}", "", f"- sample_id: {s['sample_id']}"]
        if s["dropped_reason"]:
            lines.append(f"- dropped: {s['dropped_reason']}")
        lines += ["", "### Messages", ""]
        for msg in s["messages_summary"]:
            for part in msg["parts"]:
                if part["kind"] == "image":
                    lines.append(f"- {msg['role']}: image {part['image']} ({part['width']}x{part['height']} px)")
                else:
                    lines += [f"- {msg['role']}:", "", _block(part["text"]), ""]
        for title, field in (("Rollout (raw)", "rollout_text"), ("Prefix Used (append-ready)", "prefix_text"),
                             ("Training Target (prefix + FN append)", "target_text")):
            lines += ["", f"### {title}", "", _block(s[field])]
        lines += ["", "### GT Objects", "", *(_object_line(o) for o in s["gt_objects"])]
        lines += ["", "### Pred Objects (valid)", "", *(_object_line(o) for o in s["pred_objects"])]
        lines += ["", "### Match", "", *(f"- pred {m['pred_i']} <-> gt {m['gt_i']}: IoU {m['iou']:.4f}"
                                         for m in s["matches"])]
        lines += [f"- FP preds: {s['fp_pred_indices']}", f"- FN gt: {s['fn_gt_indices']}"]
        lines += ["", "### Stats", "", "```json", json.dumps(s["stats"], ensure_ascii=True, indent=2), "```"]
    return "\n".join(lines) + "\n"


def _object_line(o: Mapping[str, Any]) -> str:
    key = f" {o['key']}" if o.get("key") else ""
    desc = o["desc"].encode("ascii", "backslashreplace").decode("ascii")
    return f"- [{o['index']}]{key} {desc!r} {o['geom_type']} {list(o['points'])}"
