"""``python -m coordexp.bench pipeline``: Channel-B steps with and without ``channel_b.enable_pipeline``.

Both runs train the tiny Qwen3-VL from the same seed on synthetic shapes, every step Channel-B in step
mode, through the real executor (rollout -> parse -> match -> target -> pack -> learn -> log) with the
``hf`` backend; the pipelined run generates chunk k+1 of ``--decode-batch`` samples on a producer thread
while chunk k is parsed, matched and targeted. Rounds alternate between the two runs, so machine load hits
both alike. Reported: seconds per step (median of the rounds) for each, their ratio (< 1: the pipeline is
faster), and the pipelined run's overlap ratio (generation hidden behind the main thread's work / all
generation, from ``time/pipeline_overlap_s`` and ``time/rollout_generate_s``) with its waits.

The ``hf`` backend generates on the learner's own device, so only the CPU-side parse/match/target work
can hide generation here; a backend on other GPUs (vLLM server) hides it behind that work and the
prompt encoding of the step. The numbers are ratios within one run of this command, never absolutes.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
from pathlib import Path

import torch

from coordexp.cli import count
from coordexp.config import load_config_data, validate


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--rollouts", type=count(1), default=8, help="Channel-B rollouts per step (default 8)")
    p.add_argument("--decode-batch", type=count(1), default=2, help="samples per rollout chunk (default 2)")
    p.add_argument("--max-new-tokens", type=count(1), default=64, help="rollout budget (default 64)")
    p.add_argument("--rounds", type=count(1), default=4, help="steps timed per run (default 4)")
    p.add_argument("--threads", type=count(0), default=1, help="torch intra-op threads; 0 = torch's default")


def _config(folder: Path, args: argparse.Namespace, *, pipelined: bool):
    data = {
        "global_max_length": 2048,
        "model": {"model": "tiny", "torch_dtype": "float32", "attn_impl": "sdpa"},
        "tuner": {"train_type": "lora", "lora_rank": 4, "lora_alpha": 8, "lora_dropout": 0.0},
        "training": {"per_device_train_batch_size": 1, "effective_batch_size": args.rollouts,
                     "dataloader_drop_last": True, "packing": True, "packing_buffer": 4 * args.rollouts,
                     "learning_rate": 1e-4, "lr_scheduler_type": "constant", "bf16": False,
                     "gradient_checkpointing": False, "max_steps": args.rounds + 1, "logging_steps": 1,
                     "eval_strategy": "no", "save_strategy": "no", "output_dir": str(folder),
                     "run_name": "piped" if pipelined else "plain", "seed": 0},
        "custom": {"trainer_variant": "stage2_ab_training",
                   "train_jsonl": f"synthetic://shapes?n={args.rollouts * (args.rounds + 1)}&seed=0",
                   "extra": {"rollout_matching": {"rollout_backend": "hf", "decode_batch_size": args.decode_batch,
                                                  "max_new_tokens": args.max_new_tokens},
                             "stage2_ab": {"schedule": {"b_ratio": 1.0},
                                           "channel_b": {"mode": "step", "enable_pipeline": pipelined}}}},
    }
    loaded = load_config_data(data, source="<bench pipeline>")
    validate(loaded.config, env={})
    return loaded.config


def main(args: argparse.Namespace) -> int:
    import warnings

    from coordexp.errors import ConfigWarning
    from coordexp.train import build_executor

    if args.threads:
        torch.set_num_threads(args.threads)
    warnings.simplefilter("ignore", ConfigWarning)  # the expected "shares the learner's device" note
    with tempfile.TemporaryDirectory() as tmp:
        runs = {name: build_executor(_config(Path(tmp), args, pipelined=name == "piped"), Path(tmp) / name)
                for name in ("plain", "piped")}
        for ex in runs.values():
            ex.tele.bar.disable = True
            ex.run_step(0)  # warm-up: first-call allocations and compilation stay out of the timings
        seconds: dict[str, list[float]] = {name: [] for name in runs}
        generate = wait = overlap = 0.0
        for step in range(1, args.rounds + 1):
            for name, ex in runs.items():
                state = ex.run_step(step)
                seconds[name].append(state.metrics["time/step_s"])
                if state.pipeline is not None:
                    generate += state.pipeline.generate_s
                    wait += state.pipeline.wait_s
                    overlap += state.pipeline.overlap_s
        for ex in runs.values():
            ex.tele.close()
            ex.rt.backend.close()
    plain, piped = (statistics.median(seconds[n]) for n in ("plain", "piped"))
    print(f"Channel-B step, {args.rollouts} rollouts in chunks of {args.decode_batch}, max_new_tokens "
          f"{args.max_new_tokens}, hf backend, tiny Qwen3-VL, {args.rounds} rounds")
    print(f"  unpipelined : {plain:.3f} s/step")
    print(f"  pipelined   : {piped:.3f} s/step  (x{piped / plain:.2f} of unpipelined)")
    ratio = overlap / generate if generate > 0 else 0.0
    print(f"  overlap     : {ratio:.2f} of {generate:.2f} s generation hidden; main thread waited {wait:.2f} s")
    return 0
