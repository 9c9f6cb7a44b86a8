"""``training.*``: optimisation, batching, post-rollout packing, evaluation, checkpoints and logging.

Packing here always means coordexp's post-rollout packing of teacher-forced segments (rollouts are never
packed); its length is ``global_max_length``, so there is no ``packing_length`` key.
"""

from __future__ import annotations

from typing import Literal

import attrs

from coordexp.config._fields import knob


@attrs.frozen
class TrainingConfig:
    # --- batching ---
    effective_batch_size: int | None = knob(
        None,
        help="Samples per optimizer step over all ranks; gradient accumulation is derived from it. Required for "
        "stage2_ab_training (must be divisible by per_device_train_batch_size x world size).",
    )
    per_device_train_batch_size: int = knob(1, help="Raw samples per rank per micro-step (> 0).")
    per_device_eval_batch_size: int | None = knob(None, help="Eval batch per rank; null = `rollout_matching.decode_batch_size`.")
    gradient_accumulation_steps: int | None = knob(
        None, help="Micro-steps per optimizer step; null = derived from effective_batch_size (else 1)."
    )
    world_size: int | None = knob(
        None, help="Learner processes; null = the WORLD_SIZE environment variable at validation time, else 1."
    )
    dataloader_drop_last: bool = knob(False, help="Drop the final partial batch / accumulation window of an epoch.")
    dataloader_num_workers: int = knob(0, help="Threads that decode a step's images in parallel (>= 0; 0 = in the main thread).")
    # --- post-rollout packing ---
    packing: bool = knob(False, help="Pack teacher-forced segments into rows of `global_max_length` tokens.")
    packing_buffer: int = knob(512, help="Maximum buffered segments waiting for a pack (> 0).")
    packing_min_fill_ratio: float = knob(0.65, help="Packs filled below this ratio are counted in metrics, in (0, 1].")
    packing_drop_last: bool = knob(True, help="Leftover segments are never flushed at the end of training (must be true).")
    packing_mode: Literal["carry", "step"] | None = knob(
        None,
        help="`carry`: one pack per micro-step, leftover segments carried to later micro-steps (legacy); `step`: "
        "every segment of an optimizer step is packed within that step (several forwards, nothing carried, so "
        "the buffer cannot grow). null = `carry` for rollout_matching_sft; stage2_ab_training derives it from "
        "`stage2_ab.channel_b.mode` (step -> step, micro -> carry) and an explicit value must agree.",
    )
    # --- optimisation ---
    learning_rate: float = knob(2e-5, help="Peak learning rate of the trainable parameters (> 0).")
    vit_lr: float | None = knob(None, help="Learning rate of the vision tower; null = learning_rate.")
    aligner_lr: float | None = knob(None, help="Learning rate of the aligner; null = learning_rate.")
    lr_scheduler_type: Literal["constant", "linear", "cosine", "cosine_with_min_lr"] = knob("cosine", help="Learning-rate schedule.")
    min_learning_rate: float | None = knob(None, help="Floor of `cosine_with_min_lr`.")
    warmup_ratio: float = knob(0.0, help="Fraction of total steps used for linear warmup, in [0, 1).")
    warmup_steps: int = knob(0, help="Warmup steps; overrides warmup_ratio when > 0.")
    weight_decay: float = knob(0.0, help="AdamW weight decay (>= 0).")
    max_grad_norm: float = knob(1.0, help="Gradient clipping norm (> 0).")
    bf16: bool = knob(True, help="bfloat16 autocast for the learner.")
    gradient_checkpointing: bool = knob(True, help="Recompute activations in backward to save memory.")
    deepspeed: str | None = knob(None, help="DeepSpeed config (file or preset such as `zero2`); null = off.")
    seed: int = knob(17, help="Global seed (data order, sampling, vLLM server seeds).")
    max_steps: int | None = knob(None, help="Stop after this many optimizer steps; null = use num_train_epochs.")
    num_train_epochs: float = knob(1.0, help="Epochs over train_jsonl when max_steps is null (> 0).")
    # --- eval / save / log ---
    eval_strategy: Literal["no", "steps", "epoch"] = knob("steps", help="When to run the rollout evaluator.")
    eval_steps: int | None = knob(20, help="Evaluate every N optimizer steps (eval_strategy `steps`).")
    save_strategy: Literal["no", "steps", "epoch", "best"] = knob("steps", help="When to write checkpoints.")
    save_steps: int | None = knob(40, help="Checkpoint every N optimizer steps (save_strategy `steps`).")
    save_total_limit: int | None = knob(None, help="Keep at most this many checkpoints; null = all.")
    save_delay_steps: int | None = knob(None, help="No checkpoint before this optimizer step.")
    save_last_epoch: bool = knob(False, help="Always checkpoint at the end of the last epoch.")
    metric_for_best_model: str = knob("rollout/f1", help="Eval metric that ranks checkpoints (without the `eval_` prefix).")
    greater_is_better: bool = knob(True, help="Whether a larger metric_for_best_model is better.")
    logging_steps: int = knob(10, help="Log aggregated metrics every N optimizer steps (> 0).")
    logging_first_step: bool = knob(False, help="Also log after the first optimizer step.")
    output_dir: str = knob("output", help="Run folder root; `<output_dir>/<run_name>` holds checkpoints and logs.")
    logging_dir: str | None = knob(None, help="Log folder; null = `<output_dir>/<run_name>`.")
    run_name: str | None = knob(None, help="Run name (folder name under output_dir); null = derived from the config file name.")
