"""Everything a run needs, built once from the resolved config: model, tokenizer context, data, backend, learner.

The runtime is the only place that turns the config into live objects; the records the pure transitions
take come from ``coordexp.bind``. The stages (``coordexp.stages``) ask the runtime for the impure
per-sample work: encode a prompt, build a rollout request, turn a target into a tensor segment.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import attrs
import torch

from coordexp.bind import Bound, bind
from coordexp.config import Config, Derived, derive
from coordexp.config.schema_model import DEMO_MODEL, TINY_MODEL
from coordexp.core.pack import OVERSIZE_MITIGATIONS
from coordexp.core.tokens import TokenContext
from coordexp.data.dataset import load_samples
from coordexp.data.prompts import Prompts, build_messages, gt_answer_ids, resolve_prompts
from coordexp.data.records import Sample, open_images, target_sample
from coordexp.errors import ConfigError, DataError, SegmentTooLongError
from coordexp.learn.encode import encode_prompt, gt_segment, with_answer
from coordexp.learn.model import LoadedModel, load_model_from_config
from coordexp.learn.segments import target_segment
from coordexp.prompt_cache import PromptCache

if TYPE_CHECKING:
    from coordexp.backends.protocol import RolloutBackend, RolloutRequest
    from coordexp.learn.learner import Learner
    from coordexp.learn.packed import Segment
    from coordexp.stages import Item, StepState

log = logging.getLogger("coordexp")
T = TypeVar("T")
BUILTIN_MODELS = (TINY_MODEL, DEMO_MODEL)
CONFIG_READS = (
    "training.world_size",
    "training.seed",
    "training.dataloader_num_workers",
    "custom.train_jsonl",
    "custom.val_jsonl",
    "custom.image_root",
    "custom.train_sample_limit",
    "custom.val_sample_limit",
    "custom.object_ordering",
)


@attrs.frozen
class Distributed:
    """This process's place in a torchrun job (rank 0 of 1 without one)."""

    rank: int = 0
    world: int = 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def agree(self, decide: Callable[[], T]) -> T:
        """Rank 0's ``decide()``, on every rank (e.g. the run folder, chosen before anyone creates it)."""
        if self.world == 1:
            return decide()
        import torch.distributed as dist

        box = [decide() if self.is_main else None]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def min_over_ranks(self, value: int) -> int:
        if self.world == 1:
            return value
        import torch.distributed as dist

        t = torch.tensor([value], dtype=torch.long)
        dist.all_reduce(t, op=dist.ReduceOp.MIN)
        return int(t)


def distributed_from_env() -> Distributed:
    """Join the process group torchrun describes (gloo on CPU, nccl on CUDA); 1 process otherwise."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Distributed()
    import torch.distributed as dist

    if not dist.is_initialized():
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    return Distributed(dist.get_rank(), dist.get_world_size())


@attrs.define
class Runtime:
    config: Config
    derived: Derived
    bound: Bound
    loaded: LoadedModel
    ctx: TokenContext
    prompts: Prompts
    train: list[Sample]
    val: list[Sample]
    dist: Distributed
    device: torch.device
    backend: RolloutBackend | None = None
    learner: Learner | None = None
    prompt_cache: PromptCache = attrs.Factory(PromptCache)
    drop_log: list[dict[str, Any]] = attrs.Factory(list)

    @property
    def processor(self) -> Any:
        return self.loaded.processor

    @property
    def model(self) -> torch.nn.Module:
        return self.loaded.model

    @property
    def seed(self) -> int:
        return self.config.training.seed

    # per-sample work the stages ask for
    def decode_images(self, items: list[Item]) -> None:
        """Decode the items' images, on ``training.dataloader_num_workers`` threads when > 0.

        A sample whose image cannot be read keeps ``images`` None; ``encode_prompt`` then raises its
        DataError for that sample alone, which the stage counts as a drop.
        """
        workers = self.config.training.dataloader_num_workers
        if workers <= 0 or len(items) < 2:
            return
        from concurrent.futures import ThreadPoolExecutor

        def decode(item: Item) -> None:
            try:
                item.images = open_images(item.sample)
            except DataError:
                item.images = None

        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="coordexp-images") as pool:
            list(pool.map(decode, items))

    def cached_prompt(self, item: Item) -> bool:
        """Fill the item's prompt from the cache; False when it has to be encoded."""
        hit = self.prompt_cache.get(item.sample.sample_id)
        if hit is not None:
            item.messages, item.encoding = hit
        return hit is not None

    def encode_prompt(self, item: Item) -> None:
        """The item's chat turns and their encoding (the image is decoded and processed once per sample)."""
        images = item.images if item.images is not None else open_images(item.sample)
        item.messages = build_messages(item.sample, images, self.prompts)
        item.encoding = encode_prompt(self.processor, item.messages)
        item.images = None
        self.prompt_cache.put(item.sample.sample_id, item.messages, item.encoding)

    def request(self, item: Item) -> RolloutRequest:
        from coordexp.backends.protocol import RolloutRequest

        enc = item.encoding
        return RolloutRequest(
            sample_id=item.sample.sample_id,
            prompt_ids=tuple(int(t) for t in enc.input_ids),
            encoding=enc,
            images=tuple(part["image"] for msg in item.messages if not isinstance(msg["content"], str)
                         for part in msg["content"] if part.get("type") == "image"),
        )

    def rollout_segment(self, item: Item, *, key: str) -> Segment:
        """Channel B: the target after the rollout's prompt; its matched-prefix and FN boxes get geometry (AB)."""
        boxes_ctx = self.ctx if self.bound.geometry_loss is not None else None  # boxes only feed AB geometry
        return target_segment(item.encoding, item.target, key=key, ctx=boxes_ctx, layout=item.target_sample.layout)

    def gt_segment(self, item: Item, *, key: str) -> Segment:
        """Channel A: the GT answer (ordered by custom.object_ordering) teacher-forced after the prompt."""
        y_ids = gt_answer_ids(item.sample, self.config.custom.object_ordering, ctx=self.ctx,
                              layout=item.target_sample.layout, seed=self.seed, epoch=item.epoch)
        return gt_segment(with_answer(item.encoding, y_ids), coord_id_to_bin=self.ctx.coord_id_to_bin, key=key,
                          ctx=self.ctx if self.bound.geometry_loss is not None else None,
                          layout=item.target_sample.layout)

    def check_fits(self, segment: Segment) -> Segment:
        """A segment longer than a packed row (``global_max_length``) is refused here, per sample, so the step
        drops and counts it instead of failing when the pack is built."""
        plan = self.bound.packing
        if plan is not None and segment.length > plan.cap:
            raise SegmentTooLongError(
                f"segment {segment.key!r}: encoded_len={segment.length} > packing_length={plan.cap}; the sample is "
                f"dropped. {OVERSIZE_MITIGATIONS}"
            )
        return segment

    def rollout_seed(self, state: StepState) -> int:
        """Sampling seed of one step's (or one evaluation's) rollouts: the same run draws the same rollouts."""
        return (self.seed * 1_000_003 + state.step * 2 + int(state.is_eval)) % 2**31

    def target_sample(self, sample: Sample, *, epoch: int):
        return target_sample(
            sample,
            bbox_only=self.bound.target.bbox_only,
            ordering=self.config.custom.object_ordering,
            seed=self.seed,
            epoch=epoch,
        )

    def note_drop(self, state: StepState, item: Item, stage: str, exc: Exception) -> None:
        """Keep the first drops of a run, with their sample and reason, for the monitor dump and the log."""
        if len(self.drop_log) < 100:
            self.drop_log.append({"step": state.step, "sample_id": item.sample.sample_id, "source": item.sample.source,
                                  "stage": stage, "error": str(exc)[:500]})
        if len(self.drop_log) <= 5:
            log.warning("step %d: dropped sample %s at %s: %s", state.step, item.sample.sample_id, stage, exc)


def rollout_backend(rt: Runtime, *, run_dir: Path | None = None) -> RolloutBackend:
    """The configured backend (``rollout_backend: hf``, or ``vllm`` with ``vllm.mode`` colocate | server).

    ``run_dir``: the run folder; server mode writes its weight-sync exports and debug dumps there.
    """
    from coordexp.backends import build_backend

    rm = rt.config.rollout_matching
    name = f"vllm_{rm.vllm.mode}" if rm.rollout_backend == "vllm" else rm.rollout_backend
    extra: dict[str, Any] = {}
    if name == "vllm_server":
        extra = {"server": rt.bound.server, "run_dir": run_dir,
                 "step_of": lambda: rt.learner.global_step if rt.learner is not None else 0}
    elif name == "vllm_colocate":
        if rt.dist.world > 1:
            raise ConfigError(f"custom.extra.rollout_matching.vllm.mode: colocate runs one engine per learner "
                              f"process, and this run has {rt.dist.world}; multi-process colocate is not supported "
                              "yet. Fix: one learner process, or vllm.mode: server")
        extra = {"vllm": rt.bound.vllm, "workdir": run_dir / "vllm_colocate" if run_dir is not None else None,
                 "optimizer": lambda: rt.learner.optimizer if rt.learner is not None else None}
    return build_backend(name, model=rt.model, processor=rt.processor, ctx=rt.ctx, decoding=rt.bound.decoding,
                         stop_rules=rt.bound.stop_rules, **extra)


def _device(model_name: str) -> torch.device:
    if torch.cuda.is_available():
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    if model_name in BUILTIN_MODELS and "OMP_NUM_THREADS" not in os.environ:
        # the built-in models' matrices are tiny: threads only add synchronisation (measured ~5x slower on 2
        # busy cores); an explicit OMP_NUM_THREADS still wins
        torch.set_num_threads(1)
    return torch.device("cpu")


def build_runtime(config: Config, *, dist: Distributed | None = None) -> Runtime:
    """Load data first (a broken record fails before any model is built), then the model and the tokenizer."""
    dist = dist or distributed_from_env()
    declared = config.training.world_size
    if declared is not None and declared != dist.world:
        raise ConfigError(
            f"training.world_size is {declared} but this run has {dist.world} process(es); launch it with "
            f"`torchrun --nproc_per_node {declared} -m coordexp.run ...` or remove training.world_size"
        )
    custom = config.custom
    root = custom.image_root
    train = load_samples(custom.train_jsonl, image_root=root, limit=custom.train_sample_limit, key="custom.train_jsonl")
    val = (load_samples(custom.val_jsonl, image_root=root, limit=custom.val_sample_limit, key="custom.val_jsonl")
           if custom.val_jsonl else [])
    bound = bind(config)
    torch.manual_seed(config.training.seed)
    loaded = load_model_from_config(config.model, config.tuner)
    device = _device(str(config.model.model))
    loaded.model.to(device)
    ctx = TokenContext.from_hf(loaded.processor.tokenizer, name=str(config.model.model))
    prompts = resolve_prompts(custom)
    return Runtime(config, derive(config), bound, loaded, ctx, prompts, train, val, dist, device)

