"""Typed configuration: attrs schema, YAML loading (extends / base_config / --set), validation, docs.

Public API::

    loaded = load(path, base_config=None, overrides=())   # Loaded(config, ...), strict structuring
    config = load_config(path, ...)                          # just the Config
    warnings = validate(config)                              # raises ConfigError with every problem
    text = config_to_yaml(config)

Importing this package pulls in attrs, cattrs and PyYAML only (no torch).
"""

from __future__ import annotations

from coordexp.config.derive import Derived, derive
from coordexp.config.dump import config_to_plain, config_to_yaml
from coordexp.config.loader import Loaded, load, load_config, load_config_data
from coordexp.config.schema_root import Config
from coordexp.config.validate import validate

__all__ = [
    "Config",
    "Derived",
    "Loaded",
    "config_to_plain",
    "config_to_yaml",
    "derive",
    "load",
    "load_config",
    "load_config_data",
    "validate",
]
