"""``python -m coordexp.replay --rollouts FILE_OR_DIR [--config C] [--tokenizer DIR] [--out DIR] [--compare C2]``.

Replays recorded rollouts through the training machine (no model, no GPU) and writes the diagnosis
(docs/diagnosing.md). ``--config`` defaults to the recording run's own ``config.yaml`` when the input
is a coordexp run folder (the config that recorded it), else to the shipped ``configs/base.yaml``.
When the run folder holds its ``logging.jsonl`` and ``trace.jsonl``, the replay checks that it
reproduces the logged rollout metrics and the targets checksum of every step, and says so.
Exit codes: 0 ok (1 when a reproduction check fails), 2 bad input (the message names the file and
what was expected).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import warnings
from collections.abc import Sequence
from pathlib import Path

from coordexp.config import Config, load, validate
from coordexp.errors import ConfigWarning, CoordexpError
from coordexp.replay.diagnosis import diagnose
from coordexp.replay.formats import ReplayInput, read_input, tokenizer_context
from coordexp.replay.pipeline import ReplayRun, replay
from coordexp.replay.report import write_outputs

EXIT_OK, EXIT_MISMATCH, EXIT_INPUT = 0, 1, 2
SHIPPED_BASE = Path(__file__).resolve().parents[2] / "configs" / "base.yaml"
# Keys a replay cannot reproduce: wall time and what is derived from it.
NOT_REPLAYED = ("rollout/gen_tokens_per_s",)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m coordexp.replay",
                                description="Replay recorded rollouts offline and diagnose them (seed 000's checks).",
                                epilog="Exit codes: 0 ok, 1 a reproduction check failed, 2 bad input.")
    p.add_argument("--rollouts", required=True, type=Path, metavar="FILE_OR_DIR",
                   help="rollouts.jsonl or a run folder, gt_vs_pred.jsonl / pred.jsonl, a folder of vLLM debug "
                        "dumps or of monitor dumps")
    p.add_argument("--config", type=Path, help="Config to replay under (default: the run's config.yaml, else "
                                               "configs/base.yaml)")
    p.add_argument("--tokenizer", type=Path, help="Tokenizer folder (default: the fixture tokenizer)")
    p.add_argument("--out", type=Path, help="Output folder (default: <input folder>/replay)")
    p.add_argument("--compare", type=Path, metavar="C2", help="Replay again under C2 and print the metric deltas")
    p.add_argument("--quiet", action="store_true", help="No progress bar")
    return p


def _config(path: Path) -> Config:
    loaded = load(path)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConfigWarning)  # environment warnings do not matter offline
        validate(loaded.config, display=loaded.display, locate=loaded.locate, source=str(path))
    return loaded.config


def _default_config(inp: ReplayInput) -> Path:
    if inp.run_dir is not None and (inp.run_dir / "config.yaml").is_file():
        return inp.run_dir / "config.yaml"
    return SHIPPED_BASE


def _read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def check_reproduction(run: ReplayRun) -> list[str]:
    """Differences between the replay and the recording run's own logs (empty: reproduced exactly)."""
    folder = run.input.run_dir
    problems: list[str] = []
    if folder is None:
        return problems
    log = folder / "logging.jsonl"
    if log.is_file():
        recorded = {(r["mode"], r["step"]): r["metrics"] for r in _read_jsonl(log)}
        for rec in run.logged:
            theirs = recorded.get((rec["mode"], rec["step"]))
            if theirs is None:
                problems.append(f"logging.jsonl has no {rec['mode']} record at step {rec['step']}")
                continue
            prefix = "rollout/" if rec["mode"] == "train" else "eval_rollout/"
            keys = {k for k in theirs if k.startswith(prefix) and k not in NOT_REPLAYED}
            for k in sorted(keys | {k for k in rec["metrics"] if k.startswith(prefix) and k not in NOT_REPLAYED}):
                a, b = theirs.get(k), rec["metrics"].get(k)
                if a != b:
                    problems.append(f"{rec['mode']} step {rec['step']}: {k} logged {a}, replayed {b}")
    trace = folder / "trace.jsonl"
    if trace.is_file():
        logged = {r["step"]: r["targets_sha"] for r in _read_jsonl(trace) if r.get("mode") == "train" and "targets_sha" in r}
        for step, digest in run.step_digests.items():
            if logged.get(step) != digest:
                problems.append(f"train step {step}: targets checksum logged {logged.get(step)}, replayed {digest}")
    return problems


def compare(base: dict[str, float], other: dict[str, float]) -> list[tuple[str, float | None, float | None]]:
    """Keys whose value differs between two replays (missing on one side: None)."""
    out = []
    for k in sorted(set(base) | set(other)):
        a, b = base.get(k), other.get(k)
        if a != b and not (a is not None and b is not None and math.isclose(a, b, rel_tol=0, abs_tol=1e-12)):
            out.append((k, a, b))
    return out


def _run(args: argparse.Namespace) -> int:
    ctx = tokenizer_context(args.tokenizer)
    inp = read_input(args.rollouts, ctx=ctx)
    config_path = args.config or _default_config(inp)
    config = _config(config_path)
    out = args.out or ((inp.path if inp.path.is_dir() else inp.path.parent) / "replay")
    run = replay(inp, config=config, ctx=ctx, progress=not args.quiet)
    diag = diagnose(run, ctx=ctx, config=config)
    metrics = write_outputs(out, run, diag)
    bad = [f for f in diag.findings if not f.healthy]
    print(f"replayed {len(run.samples)} rollouts ({inp.format}) under {config_path}; outputs in {out}")
    for f in bad:
        print(f"  OUT OF RANGE {f.key} = {f.value:.4g} (healthy: {f.seed_says}); cure: {f.cure}")
    status = EXIT_OK
    problems = check_reproduction(run)
    if inp.run_dir is not None and (inp.run_dir / "logging.jsonl").is_file():
        if problems:
            status = EXIT_MISMATCH
            print(f"reproduction: {len(problems)} difference(s) from the recording run's logs:")
            for line in problems[:20]:
                print(f"  {line}")
        else:
            print(f"reproduction: {len(run.logged)} logged records and {len(run.step_digests)} target checksums "
                  "reproduced exactly")
    if args.compare is not None:
        other_cfg = _config(args.compare)
        other_run = replay(inp, config=other_cfg, ctx=ctx, progress=not args.quiet)
        other = write_outputs(out / "compare", other_run,
                              diagnose(other_run, ctx=ctx, config=other_cfg))
        deltas = compare(metrics, other)
        print(f"compare {config_path} -> {args.compare}: {len(deltas)} metric(s) differ")
        for k, a, b in deltas:
            delta = f" ({b - a:+.4g})" if a is not None and b is not None else ""
            print(f"  {k}: {a if a is None else f'{a:.4g}'} -> {b if b is None else f'{b:.4g}'}{delta}")
    return status


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return _run(args)
    except CoordexpError as exc:
        print(f"coordexp.replay: {exc}", file=sys.stderr)
        return EXIT_INPUT
