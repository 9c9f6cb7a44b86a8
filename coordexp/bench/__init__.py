"""Benchmarks: ``python -m coordexp.bench <name>``; one module per benchmark.

Performance is measured here, never asserted in tests. Each module exposes ``add_arguments(parser)``
and ``main(args) -> int`` and is listed in ``BENCHMARKS``.
"""

from __future__ import annotations

# subcommand -> (module under coordexp.bench, one-line help)
BENCHMARKS: dict[str, tuple[str, str]] = {
    "parse": ("coordexp.bench.parse", "Parse ms per dense 60-object rollout"),
    "learn": ("coordexp.bench.learn", "Packed vs padded forward+backward on the tiny Qwen-VL"),
    "core": ("coordexp.bench.core", "Parse -> Match -> BuildTarget ms per dense sample"),
    "rollout": ("coordexp.bench.rollout", "hf rollout tokens/s with and without the stop rules; --backends: "
                "hf vs vllm_colocate vs vllm_server on the same checkpoint"),
    "pipeline": ("coordexp.bench.pipeline", "Channel-B step time and rollout overlap with enable_pipeline"),
}
