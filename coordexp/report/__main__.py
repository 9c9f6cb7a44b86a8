"""``python -m coordexp.report RUN_DIR [--out DIR] [--max-overlays N]``: the run report of a run folder.

Exit codes: 0 written (the path is printed); 2 the input is not a readable run folder (the message
names the file and line), printed as one line without a traceback.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from coordexp.errors import CoordexpError
from coordexp.report.run_report import DEFAULT_OVERLAYS, build_report

EXIT_OK, EXIT_INPUT = 0, 2


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m coordexp.report",
        description="The run report of a run folder: training curves and GT-vs-prediction overlays, one HTML page.",
        epilog="Exit codes: 0 written; 2 not a readable run folder (the message names the file and line).")
    parser.add_argument("run_dir", type=Path, metavar="RUN_DIR", help="A run folder (<output_dir>/<run_name>/).")
    parser.add_argument("--out", type=Path, default=None, help="Where report.html and the PNGs go (RUN_DIR/report).")
    parser.add_argument("--max-overlays", type=int, default=DEFAULT_OVERLAYS, metavar="N",
                        help=f"Monitor-dump samples drawn (default {DEFAULT_OVERLAYS}).")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.max_overlays < 0:
        parser.error("--max-overlays must be >= 0")
    try:
        summary = build_report(args.run_dir, args.out, max_overlays=args.max_overlays)
    except (CoordexpError, OSError) as exc:
        print(f"error: {' '.join(str(exc).split())}", file=sys.stderr)
        return EXIT_INPUT
    print(f"report: {summary.html} ({len(summary.plots)} plots, {len(summary.overlays)} overlays, "
          f"{summary.missing_images} missing images, {summary.flags} flags)")
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
