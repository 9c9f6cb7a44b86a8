"""One training run from a resolved config: run folder, runtime, backend, learner, executor, closing line.

``python -m coordexp.run --config C`` calls ``train``; tests call it too, so the CLI and the tests run the
same code. A resume (``--resume RUN_DIR``) rebuilds everything from the config, checks that the config is
the one the run started with, restores the newest checkpoint and goes on from its step.
"""

from __future__ import annotations

import logging
from pathlib import Path

import attrs

from coordexp.checkpointing import Checkpointer
from coordexp.config import Config, config_to_yaml
from coordexp.errors import ConfigError, StabilityStop
from coordexp.executor import Executor, Progress, total_steps
from coordexp.learn.learner import Learner
from coordexp.learn.tuner import upcast_trainable
from coordexp.runfolder import CONFIG_FILE, latest_checkpoint, run_dir
from coordexp.runtime import Distributed, Runtime, build_runtime, distributed_from_env, rollout_backend
from coordexp.step_log import StepLogger

log = logging.getLogger("coordexp")
CONFIG_READS = ("training.output_dir", "training.run_name")


@attrs.frozen
class Summary:
    run_dir: Path
    steps: int
    first_eval: dict[str, float] | None
    last_eval: dict[str, float] | None
    interrupted: bool
    checkpoint: Path | None

    def closing_line(self) -> str:
        where = f"run folder {self.run_dir}"
        if self.first_eval is None or self.last_eval is None:
            return f"coordexp: {self.steps} steps; {where} (no evaluation set)"
        f0, f1 = self.first_eval.get("eval_rollout/f1", 0.0), self.last_eval.get("eval_rollout/f1", 0.0)
        v0 = self.first_eval.get("eval_rollout/parse_valid_rate", 0.0)
        v1 = self.last_eval.get("eval_rollout/parse_valid_rate", 0.0)
        return (f"coordexp: {self.steps} steps; eval F1 {f0:.3f} -> {f1:.3f} ({f1 - f0:+.3f}), "
                f"parse-valid rate {v0:.2f} -> {v1:.2f}; {where}")


def _run_folder(config: Config, config_path: Path) -> Path:
    """``<output_dir>/<run_name>``; a new run never writes into an earlier run's folder: it takes ``-2``, ``-3`` ..."""
    t = config.training
    base = run_dir(t.output_dir, t.run_name or config_path.stem)
    folder, n = base, 1
    while folder.exists() and any(folder.iterdir()):
        n += 1
        folder = base.with_name(f"{base.name}-{n}")
    if n > 1:
        log.warning("run folder %s is taken by an earlier run; this run writes to %s (use --resume %s to continue "
                    "that one)", base, folder, base)
    return folder


def _check_resume_config(folder: Path, text: str) -> None:
    saved = folder / CONFIG_FILE
    if saved.is_file() and saved.read_text(encoding="utf-8") != text:
        raise ConfigError(
            f"--resume {folder}: the config differs from the one this run started with ({saved}); resume with "
            "the same config, or start a new run (another training.run_name)"
        )


def learner_for(rt: Runtime, steps: int) -> Learner:
    """The learner over the model; under torchrun the model is wrapped in DDP for it (rollouts use it bare)."""
    model = rt.model
    if rt.dist.world > 1:
        from torch.nn.parallel import DistributedDataParallel

        if rt.config.training.bf16:
            upcast_trainable(model)  # fp32 master weights before DDP builds its buckets

        ids = [rt.device.index] if rt.device.type == "cuda" else None
        model = DistributedDataParallel(model, device_ids=ids)
    return Learner(model, training=rt.config.training, coord_cfg=rt.bound.coord_loss,
                   coord_ids=rt.loaded.coord_ids, total_steps=steps, geometry=rt.bound.geometry_loss,
                   soft_context=rt.bound.soft_context)


def build_executor(config: Config, folder: Path, *, dist: Distributed | None = None,
                   resume_from: Path | None = None) -> Executor:
    """Runtime, learner, backend, checkpointer and logger of a run writing to ``folder``, ready to train.

    ``folder`` is created (with the resolved ``config.yaml``) only once the data has loaded cleanly.

    ``resume_from`` (a checkpoint folder) restores the learner and the trainer state first, so the logger's
    progress starts at the restored step.
    """
    rt = build_runtime(config, dist=dist)  # the data is validated here: a bad record fails before any folder exists
    if rt.dist.is_main:
        folder.mkdir(parents=True, exist_ok=True)
        (folder / CONFIG_FILE).write_text(config_to_yaml(config), encoding="utf-8")
    steps = total_steps(rt)
    rt.learner = learner_for(rt, steps)
    rt.backend = rollout_backend(rt, run_dir=folder)
    ckpt = Checkpointer(folder, is_main=rt.dist.is_main)
    ex = Executor(rt, checkpointer=ckpt, total_steps=steps)
    if resume_from is not None:
        ckpt.restore(ex, resume_from)
        log.info("resumed at step %d from %s", ex.progress.step, resume_from)
    pos = ex.progress.position
    ex.tele = StepLogger(rt, folder, total_steps=steps, start_step=ex.progress.step,
                         samples_seen=pos.epoch * len(rt.train) + pos.offset - pos.dropped)
    return ex


def train(config: Config, *, config_path: Path, resume: Path | None = None) -> Summary:
    dist = distributed_from_env()
    folder = dist.agree(lambda: _run_folder(config, config_path) if resume is None else _resume_folder(resume))
    text = config_to_yaml(config)
    if resume is not None:
        _check_resume_config(folder, text)
    ex = build_executor(config, folder, dist=dist, resume_from=latest_checkpoint(resume) if resume else None)
    progress: Progress = ex.train()
    ex.rt.backend.close()
    saved = ex.ckpt.saved
    alarm = ex.stability.stopped_by
    if alarm is not None:
        where = f"checkpoint {saved[-1]}" if saved else f"run folder {folder}"
        raise StabilityStop(f"{alarm.message()}. The run stopped after step {progress.step} "
                            f"(custom.extra.stability_guard.action: {ex.stability.cfg.action}); {where}")
    return Summary(folder, progress.step, progress.first_eval, progress.last_eval, ex.stop_requested,
                   saved[-1] if saved else None)


def _resume_folder(resume: Path) -> Path:
    checkpoint = latest_checkpoint(resume)
    return checkpoint.parent if checkpoint != resume else resume.parent
