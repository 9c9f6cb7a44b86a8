"""``python -m coordexp.bench <benchmark> [options]`` (see ``coordexp.bench.BENCHMARKS``)."""

from __future__ import annotations

import argparse
import importlib
import sys

from coordexp.bench import BENCHMARKS


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
    return module.main(args)


if __name__ == "__main__":
    sys.exit(main())
