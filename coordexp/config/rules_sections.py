"""Rules about which sections a trainer variant needs, the model and tuner, data sources, prompts and the schedule."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlsplit

from coordexp.config._findings import Findings
from coordexp.config.derive import Derived
from coordexp.config.schema_ab import RampPoint
from coordexp.config.schema_root import Config
from coordexp.errors import ConfigError

RM = "custom.extra.rollout_matching"
GENERATOR_SCHEME = "synthetic"  # data addresses synthetic://<generator>?... (grammar: coordexp.data.dataset)
EXAMPLE = "synthetic://shapes?n=64&seed=0"
AB = "custom.extra.stage2_ab"


def variant_sections(config: Config, _d: Derived, out: Findings) -> None:
    """Each trainer variant has the sections it reads; an empty mapping counts as missing."""
    variant = config.custom.trainer_variant
    if config.rollout_matching is None:
        out.error(RM, f"the rollout_matching section must be provided for trainer_variant {variant}",
                  "add the section (top-level `rollout_matching:` is accepted too) with at least rollout_backend")
    if variant == "stage2_ab_training" and config.stage2_ab is None:
        out.error(AB, "the stage2_ab section must be provided for trainer_variant stage2_ab_training",
                  "add it with at least `schedule: {b_ratio: 0.05}`")
    if variant == "rollout_matching_sft" and config.stage2_ab is not None:
        out.warn(AB, "is ignored by trainer_variant rollout_matching_sft",
                 "remove it, or set custom.trainer_variant: stage2_ab_training")


def model_and_tuner(config: Config, _d: Derived, out: Findings) -> None:
    """A model to load, and LoRA adapters on at least one named module kind."""
    if not config.model.model.strip():
        out.error("model.model", "is empty", "give a checkpoint directory or hub id, or `tiny` for the offline model")
    tuner = config.tuner
    if tuner.train_type == "lora" and not tuner.target_modules:
        out.error("tuner.target_modules", "is empty, so LoRA would train nothing",
                  "list module kinds such as [q_proj, v_proj], or keep the default [all-linear]")
    for i, name in enumerate(tuner.target_modules):
        if not name.strip():
            out.error(f"tuner.target_modules[{i}]", "is an empty module name", "remove it or name a module kind")


def data_sources(config: Config, _d: Derived, out: Findings) -> None:
    """train_jsonl is required; an address is a local path or a generator address that its generator accepts;
    eval needs val_jsonl."""
    c = config.custom
    if c.train_jsonl is None:
        out.error("custom.train_jsonl", "is required", f"point it at a JSONL file or use {EXAMPLE}")
    for key, value in (("custom.train_jsonl", c.train_jsonl), ("custom.val_jsonl", c.val_jsonl)):
        if value is None:
            continue
        scheme = urlsplit(value).scheme
        if not value.strip():
            out.error(key, "is an empty string", f"give a JSONL path or {EXAMPLE}, or null")
        elif scheme == GENERATOR_SCHEME:
            _generator_address(key, value, out)
        elif "://" in value:
            out.error(key, f"unsupported address scheme {scheme!r} in {value!r}", f"give a local JSONL path or {EXAMPLE}")
    if c.val_jsonl is None and config.training.eval_strategy != "no":
        out.error("custom.val_jsonl", f"is not set but training.eval_strategy is {config.training.eval_strategy!r}",
                  "set custom.val_jsonl or training.eval_strategy: no")


def _generator_address(key: str, value: str, out: Findings) -> None:
    """The data layer owns the address grammar and each generator its parameters: asking it for zero samples
    checks both without drawing anything. Imported only for configs that use a generator (numpy, PIL)."""
    from coordexp.data.dataset import load_samples

    try:
        load_samples(value, limit=0, key=out.display(key))
    except ConfigError as exc:
        for message in exc.messages:
            out.error_message(key, message)


def prompts(config: Config, _d: Derived, out: Findings) -> None:
    """A prompt comes from text or a file, not both; a named file must exist."""
    c = config.custom
    for role in ("user", "system"):
        text, file = getattr(c, f"{role}_prompt"), getattr(c, f"{role}_prompt_file")
        if text is not None and file is not None:
            out.error(f"custom.{role}_prompt_file", f"both custom.{role}_prompt and custom.{role}_prompt_file are set",
                      "keep one of them")
        if file is not None and not Path(file).is_file():
            out.error(f"custom.{role}_prompt_file", f"file not found: {file}",
                      "give a path relative to the config file that declares it")


def schedule(config: Config, _d: Derived, out: Findings) -> None:
    """Exactly one of pattern / b_ratio; pattern non-empty; b_ratio in [0, 1] or a well-formed ramp."""
    ab = config.stage2_ab
    if ab is None:
        return
    s, key = ab.schedule, f"{AB}.schedule"
    if (s.pattern is None) == (s.b_ratio is None):
        what = "both pattern and b_ratio are set" if s.pattern is not None else "b_ratio must be provided (or schedule.pattern)"
        out.error(key, what, "give exactly one: `b_ratio: 0.05` (design default) or `pattern: [A, A, B]`")
        return
    if s.pattern is not None and not s.pattern:
        out.error(f"{key}.pattern", "is empty", "list at least one channel, e.g. [A, A, B]")
    if isinstance(s.b_ratio, float) and not 0.0 <= s.b_ratio <= 1.0:
        out.error(f"{key}.b_ratio", f"must be in [0, 1], got {s.b_ratio}", "use a fraction such as 0.05")
    if isinstance(s.b_ratio, tuple):
        _ramp(s.b_ratio, f"{key}.b_ratio", out)


def _ramp(points: tuple[RampPoint, ...], key: str, out: Findings) -> None:
    if not points:
        out.error(key, "the ramp is empty", "list {until_step, value} entries or give a single number")
        return
    previous = 0
    for i, point in enumerate(points):
        last = i == len(points) - 1
        if not 0.0 <= point.value <= 1.0:
            out.error(f"{key}[{i}].value", f"must be in [0, 1], got {point.value}", "use a fraction such as 0.10")
        if point.until_step is None:
            if not last:
                out.error(f"{key}[{i}].until_step", "null is only allowed on the last entry", "give a step number")
            continue
        if point.until_step <= previous:
            out.error(f"{key}[{i}].until_step", f"must be > {previous} (strictly increasing), got {point.until_step}",
                      "order the entries by until_step")
        previous = max(previous, point.until_step)


RULES = (variant_sections, model_and_tuner, data_sources, prompts, schedule)
