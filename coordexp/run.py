"""Command line entry point: ``python -m coordexp.run --config C [--base_config B] [--set k=v ...] [--dry-run]``.

``--dry-run`` loads, merges and validates the config, prints the resolved YAML and the step plan, and exits 0.
Exit codes: 0 dry-run ok; 2 invalid config or arguments; 3 training requested but the training loop is not
implemented yet (coordexp says so instead of pretending to train).
"""

from __future__ import annotations

import argparse
import sys
import warnings
from collections.abc import Sequence

from coordexp.config import config_to_yaml, derive, load, validate
from coordexp.config.plan import step_plan
from coordexp.errors import ConfigError, ConfigWarning

EXIT_OK, EXIT_CONFIG, EXIT_NOT_IMPLEMENTED = 0, 2, 3


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m coordexp.run",
        description="Stage-2 rollout-matching / AB training of coord-token detectors.",
        epilog="Exit codes: 0 ok, 2 invalid config or arguments, 3 training not implemented yet.",
    )
    parser.add_argument("--config", required=True, metavar="PATH",
                        help="YAML config; may `extends:` other files (paths relative to it).")
    parser.add_argument("--base_config", metavar="PATH",
                        help="Another YAML merged underneath --config (the config wins).")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="Override one dotted key, value read as YAML (e.g. --set training.packing=true). Repeatable.")
    parser.add_argument("--dry-run", action="store_true",
                        help="Validate, print the resolved config and the step plan, and exit without training.")
    return parser


def _print_dry_run(loaded, env_warnings: list[str]) -> None:
    print(config_to_yaml(loaded.config), end="")
    print("---\n# step plan")
    for line in step_plan(loaded.config, derive(loaded.config)):
        print(f"# {line}")
    for message in env_warnings:
        print(f"warning: {message}", file=sys.stderr)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        loaded = load(args.config, base_config=args.base_config, overrides=args.overrides)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConfigWarning)  # printed below, once
            found = validate(loaded.config, display=loaded.display, source=args.config)
    except ConfigError as exc:
        print(str(exc), file=sys.stderr)
        return EXIT_CONFIG
    if args.dry_run:
        _print_dry_run(loaded, found)
        return EXIT_OK
    for message in found:
        print(f"warning: {message}", file=sys.stderr)
    print("coordexp: the config is valid, but the training loop is not implemented yet; nothing was trained. "
          "Use --dry-run to inspect the resolved config.", file=sys.stderr)
    return EXIT_NOT_IMPLEMENTED


if __name__ == "__main__":
    sys.exit(main())
