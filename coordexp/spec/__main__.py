"""``python -m coordexp.spec validate [change-id]`` and ``python -m coordexp.spec trace [--json]``."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from coordexp.spec.paths import FIXTURES_DIR, SPEC_DIR


def _validate(args: argparse.Namespace) -> int:
    from coordexp.spec.lint import lint

    report = lint(Path(args.spec_dir), only=[args.change] if args.change else None)
    for err in report.errors:
        print(err, file=sys.stderr)
    print(report.summary())
    return 0 if report.ok else 1


def _trace(args: argparse.Namespace) -> int:
    from coordexp.spec.trace import trace_tree

    report = trace_tree(Path(args.spec_dir), Path(args.fixtures_dir))
    if args.json:
        print(json.dumps(report.to_json(), indent=2, sort_keys=True))
    else:
        print(report.render())
    return 0 if report.ok else 1


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m coordexp.spec",
                                     description="Check the spec documents and their fixtures.")
    parser.add_argument("--spec-dir", default=str(SPEC_DIR),
                        help="folder of spec changes (default: the repository's spec/changes)")
    sub = parser.add_subparsers(dest="command", required=True)
    v = sub.add_parser("validate", help="lint spec.md files strictly (ids, SHALL/MUST, WHEN/THEN, transitions)")
    v.add_argument("change", nargs="?", help="one change id (default: all changes)")
    v.set_defaults(func=_validate)
    t = sub.add_parser("trace", help="scenario <-> fixture <-> runner traceability report")
    t.add_argument("--json", action="store_true", help="print the report as JSON")
    t.add_argument("--fixtures-dir", default=str(FIXTURES_DIR),
                   help="fixture root (default: the repository's fixtures/)")
    t.set_defaults(func=_trace)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
