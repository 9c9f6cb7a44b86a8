"""When to checkpoint, what a checkpoint holds beyond the learner, and how a resume restores it.

``training.save_strategy``: ``steps`` every ``save_steps`` (none before ``save_delay_steps``), ``epoch`` at
each epoch end, ``best`` whenever the eval metric improves, ``no`` never (except a Ctrl-C stop, which
always leaves a checkpoint to resume from). Any strategy but ``no`` also saves after the last step, so a
finished run always ends with a loadable model; ``save_last_epoch`` saves there even under ``no``.
``save_total_limit`` keeps the newest N, never the best.

The trainer state (``trainer_state.json``) holds the step, the data position, the best metric and the
stability guard's state with its b_ratio backoffs (so the resumed schedule is the uninterrupted one); the
carry buffer of packing (segments selected by no pack yet) goes to ``carry_buffer.pt``, so a resumed run
packs exactly what the uninterrupted one would. The rollout buffer is runtime state and starts empty.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import attrs
import torch

from coordexp.core.order import DataPosition, steps_per_epoch
from coordexp.core.pack import SegmentRef
from coordexp.learn.checkpoint import export_pretrained, load_checkpoint, save_checkpoint
from coordexp.learn.packed import Segment
from coordexp.runfolder import TRAINER_STATE, prune, read_trainer_state, write_json_atomic
from coordexp.telemetry.step import PackLengthEma

if TYPE_CHECKING:
    from coordexp.executor import Executor

CONFIG_READS = (
    "training.save_strategy",
    "training.save_steps",
    "training.save_delay_steps",
    "training.save_total_limit",
    "training.save_last_epoch",
)
CARRY_FILE = "carry_buffer.pt"
STATE_FORMAT = 1
_SEGMENT_FIELDS = tuple(f.name for f in attrs.fields(Segment) if f.name != "key")


class Checkpointer:
    def __init__(self, folder: Path, *, is_main: bool) -> None:
        self.folder = folder
        self.is_main = is_main
        self.saved: list[Path] = []

    def due(self, ex: Executor, done: int, *, final: bool) -> bool:
        t = ex.rt.config.training
        if final and t.save_last_epoch:
            return True
        if t.save_strategy == "no":
            return False
        if final:
            return True
        if t.save_strategy == "steps":
            return done % t.save_steps == 0 and done >= (t.save_delay_steps or 0)
        if t.save_strategy == "epoch":
            per_epoch = steps_per_epoch(len(ex.rt.train), per_step=ex.rt.derived.samples_per_step,
                                        drop_last=t.dataloader_drop_last) * ex.m_steps
            return done % max(1, per_epoch) == 0
        return False  # "best": saved by on_new_best

    def on_new_best(self, ex: Executor, step: int) -> None:
        if ex.rt.config.training.save_strategy == "best":
            self.save(ex, step)
        ex.progress.best_checkpoint = str(self.folder / f"checkpoint-{step}")

    def save(self, ex: Executor, step: int) -> Path | None:
        """Write ``checkpoint-<step>/`` (rank 0 only; other ranks hold the same weights under DDP)."""
        out = self.folder / f"checkpoint-{step}"
        if not self.is_main:
            return None
        rt = ex.rt
        export_pretrained(rt.model, rt.processor, rt.loaded.coord_ids, out)
        save_checkpoint(rt.learner, out, full_weights_at_root=True)
        _save_carry(ex, out)
        p = ex.progress
        write_json_atomic(out / TRAINER_STATE, {
            "format": STATE_FORMAT,
            "step": step,
            "position": attrs.asdict(p.position),
            "best_metric": p.best_metric,
            "best_checkpoint": p.best_checkpoint,
            "first_eval": p.first_eval,
            "last_eval": p.last_eval,
            "pack_ema": attrs.asdict(p.pack_ema),
            "stability": ex.stability.to_json(),  # guard state and b_ratio backoffs (coordexp.stability)
        })
        self.saved.append(out)
        best = Path(p.best_checkpoint) if p.best_checkpoint else None
        prune(self.folder, keep=rt.config.training.save_total_limit, protect=best)
        return out

    def restore(self, ex: Executor, checkpoint: Path) -> None:
        """Load the learner state and the trainer state of ``checkpoint`` into ``ex``."""
        load_checkpoint(ex.rt.learner, checkpoint)
        state = read_trainer_state(checkpoint)
        p = ex.progress
        p.step = int(state["step"])
        p.position = DataPosition(**state["position"])
        p.best_metric = state["best_metric"]
        p.best_checkpoint = state["best_checkpoint"]
        p.first_eval = state["first_eval"]
        p.last_eval = state["last_eval"]
        p.pack_ema = PackLengthEma(**state.get("pack_ema", {}))
        ex.restore_schedule(state.get("stability"))  # absent in checkpoints written before the guard
        _load_carry(ex, checkpoint)


def _save_carry(ex: Executor, out: Path) -> None:
    pk = ex.packing
    if pk.buffer is None or not pk.buffer.size:
        return
    rows = [{"key": ref.key, **{f: getattr(pk.store[ref.key], f) for f in _SEGMENT_FIELDS}} for ref in pk.buffer.segments]
    torch.save(rows, out / CARRY_FILE)


def _load_carry(ex: Executor, checkpoint: Path) -> None:
    path = checkpoint / CARRY_FILE
    if not path.is_file():
        return
    rows = torch.load(path, map_location="cpu", weights_only=True)
    pk = ex.packing
    segments = [Segment(**row) for row in rows]
    pk.store.update({s.key: s for s in segments})
    pk.buffer = attrs.evolve(pk.plan.new_buffer(), segments=tuple(SegmentRef(s.key, s.length) for s in segments))
