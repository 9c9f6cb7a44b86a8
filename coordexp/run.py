"""Command line entry point: ``python -m coordexp.run --config C [--base_config B] [--set k=v ...]``.

Without a flag it trains: ``<output_dir>/<run_name>/`` receives the resolved config, logs, monitor dumps,
rollout records and checkpoints. ``--resume RUN_DIR`` continues a run from its newest checkpoint.
``--dry-run`` loads, merges and validates the config, prints the resolved YAML and the step plan, and exits.
``--print-machine`` prints the step state machine as a mermaid diagram.
Exit codes: 0 ok; 2 invalid config, data or arguments (the message names the key, file:line or sample);
130 stopped by Ctrl-C (a checkpoint was saved).
"""

from __future__ import annotations

import argparse
import logging
import sys
import warnings
from collections.abc import Sequence
from pathlib import Path

from coordexp.config import config_to_yaml, derive, load, validate
from coordexp.config.plan import step_plan
from coordexp.errors import ConfigError, ConfigWarning, CoordexpError

EXIT_OK, EXIT_CONFIG, EXIT_INTERRUPTED = 0, 2, 130


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m coordexp.run",
        description="Stage-2 rollout-matching / AB training of coord-token detectors.",
        epilog="Exit codes: 0 ok, 2 invalid config, data or arguments, 130 stopped by Ctrl-C (checkpoint saved).",
    )
    parser.add_argument("--config", required=True, metavar="PATH",
                        help="YAML config; may `extends:` other files (paths relative to it).")
    parser.add_argument("--base_config", metavar="PATH",
                        help="Another YAML merged underneath --config (the config wins).")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="Override one dotted key, value read as YAML (e.g. --set training.packing=true). Repeatable.")
    parser.add_argument("--dry-run", action="store_true",
                        help="Validate, print the resolved config and the step plan, and exit without training.")
    parser.add_argument("--print-machine", action="store_true",
                        help="Print the step state machine (mermaid stateDiagram) and exit.")
    parser.add_argument("--resume", metavar="RUN_DIR", type=Path,
                        help="Continue the run in RUN_DIR (or a checkpoint folder) from its newest checkpoint.")
    return parser


def _print_dry_run(loaded, env_warnings: list[str]) -> None:
    print(config_to_yaml(loaded.config), end="")
    print("---\n# step plan")
    for line in step_plan(loaded.config, derive(loaded.config)):
        print(f"# {line}")
    for message in env_warnings:
        print(f"warning: {message}", file=sys.stderr)


def _log_to_stderr() -> None:
    """coordexp's own messages (resume, drops, warnings) on stderr; other libraries keep their levels."""
    logger = logging.getLogger("coordexp")
    if not logger.handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("coordexp: %(message)s"))
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)
        logger.propagate = False


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        loaded = load(args.config, base_config=args.base_config, overrides=args.overrides)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConfigWarning)  # printed below, once
            found = validate(loaded.config, display=loaded.display, locate=loaded.locate, source=args.config)
    except ConfigError as exc:
        print(str(exc), file=sys.stderr)
        return EXIT_CONFIG
    if args.print_machine:
        from coordexp.machine import mermaid

        print(mermaid(), end="")
        return EXIT_OK
    if args.dry_run:
        _print_dry_run(loaded, found)
        return EXIT_OK
    for message in found:
        print(f"warning: {message}", file=sys.stderr)
    from coordexp.train import train

    _log_to_stderr()
    try:
        summary = train(loaded.config, config_path=Path(args.config), resume=args.resume)
    except CoordexpError as exc:
        print(f"coordexp: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    print(summary.closing_line())
    return EXIT_INTERRUPTED if summary.interrupted else EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
