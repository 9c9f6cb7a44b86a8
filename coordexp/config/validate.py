"""Cross-field validation: every rule runs, errors are raised together, warnings are returned.

Rules are small named functions ``rule(config, derived, findings)`` in the ``rules_*`` modules; this module
only runs them. Warnings also go through ``warnings.warn`` as ``ConfigWarning`` so library users see them.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Mapping

from coordexp.config import rules_guard, rules_ranges, rules_rollout, rules_sections, rules_training
from coordexp.config._findings import Findings
from coordexp.config.derive import derive
from coordexp.config.schema_root import Config
from coordexp.errors import ConfigError, ConfigWarning

RULES = (*rules_ranges.RULES, *rules_sections.RULES, *rules_training.RULES, *rules_rollout.RULES,
         *rules_guard.RULES)


def validate(
    config: Config,
    *,
    env: Mapping[str, str] | None = None,
    display: Callable[[str], str] = str,
    locate: Callable[[str], str | None] | None = None,
    source: str | None = None,
) -> list[str]:
    """Run every rule; raise ConfigError with all errors, else warn and return the warning texts.

    ``env`` stands in for ``os.environ`` (WORLD_SIZE); ``display`` writes dotted keys in the user's layout;
    ``locate`` (``Loaded.locate``) names the ``file:line`` that set a key, so a message points into the file.
    """
    derived = derive(config, env)
    findings = Findings(display, locate) if locate is not None else Findings(display)
    for rule in RULES:
        rule(config, derived, findings)
    if findings.errors:
        raise ConfigError(findings.errors, source=source)
    for message in findings.warnings:
        warnings.warn(message, ConfigWarning, stacklevel=2)
    return list(findings.warnings)
