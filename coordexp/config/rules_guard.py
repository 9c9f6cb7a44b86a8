"""Rules about the stability guard (``custom.extra.stability_guard``): a backoff needs a b_ratio to lower."""

from __future__ import annotations

from coordexp.config._findings import Findings
from coordexp.config.derive import Derived
from coordexp.config.schema_root import Config

GUARD = "custom.extra.stability_guard"


def guard_action(config: Config, _d: Derived, out: Findings) -> None:
    """``backoff`` lowers stage2_ab.schedule.b_ratio; without one it could only stop, so say so up front."""
    g = config.stability_guard
    if not g.enabled or g.action != "backoff":
        return
    ab = config.stage2_ab
    if config.custom.trainer_variant != "stage2_ab_training" or ab is None:
        out.error(f"{GUARD}.action", "`backoff` lowers stage2_ab.schedule.b_ratio, and rollout_matching_sft has no "
                  "schedule (every step is Channel-B)", "use action: warn or stop")
        return
    ratio = ab.schedule.b_ratio
    if ratio is None:
        out.error(f"{GUARD}.action", "`backoff` needs a b_ratio schedule, not a pattern",
                  "use stage2_ab.schedule.b_ratio, or action: warn or stop")
        return
    highest = max(p.value for p in ratio) if isinstance(ratio, tuple) else ratio
    if 0 < highest <= g.backoff_b_ratio:  # b_ratio 0 never rolls out, so it never alarms
        out.warn(f"{GUARD}.backoff_b_ratio", f"{g.backoff_b_ratio:g} is not below the schedule's b_ratio "
                 f"({highest:g}), so the first alarm stops the run instead of backing off",
                 "set backoff_b_ratio below b_ratio, or action: stop")


RULES = (guard_action,)
