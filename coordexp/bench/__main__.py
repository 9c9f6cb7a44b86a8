"""``python -m coordexp.bench <benchmark> [options]`` (see ``coordexp.bench.BENCHMARKS``).

Exit codes: 0 done, 2 bad arguments or input (argparse, or a coordexp error such as a missing tokenizer),
printed as one message without a traceback.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from coordexp.bench import BENCHMARKS
from coordexp.errors import CoordexpError


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m coordexp.bench", description=__doc__)
    sub = parser.add_subparsers(dest="benchmark", required=True, metavar="BENCHMARK")
    for name, (module, help_text) in BENCHMARKS.items():
        p = sub.add_parser(name, help=help_text)
        importlib.import_module(module).add_arguments(p)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    module = importlib.import_module(BENCHMARKS[args.benchmark][0])
    try:
        return module.main(args)
    except (CoordexpError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
