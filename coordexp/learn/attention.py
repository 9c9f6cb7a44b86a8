"""Packed attention: causal attention inside each segment of a padding-free row, never an L x L mask.

A packed row (``coordexp.learn.packed``) holds several segments whose text positions restart at 0.
Under transformers' ``sdpa`` and ``eager`` the language model turns those positions into a dense
block-diagonal causal mask and attends over all of it: a 4096-token pack of 512-token segments scores
16.8M pairs per head and layer for 2.1M useful ones, and the mask itself is L x L. The implementations
registered here (through ``AttentionInterface`` and ``AttentionMaskInterface``, so the stock Qwen-VL
modelling code calls them) attend within each segment only:

- ``packed_fa_varlen``: flash-attn's ``flash_attn_varlen_func`` (CUDA, flash-attn installed, fp16/bf16);
- ``packed_torch_varlen``: ``torch.nn.attention.varlen.varlen_attn`` (CUDA, a torch that has it, fp16/bf16);
- ``packed_sdpa``: one causal ``scaled_dot_product_attention`` call per segment (any device, any dtype);
- ``packed``: the first of those three that runs here, decided per call from the tensors' device and
  dtype (so CPU tests and a GPU run use one config). Which kernel ran is counted in ``KERNEL_CALLS``.

Segment boundaries come from the batch: the learner passes ``cu_seq_lens_q/k`` and ``max_length_q/k``
(``packed_forward_kwargs``), the standard varlen arguments, so no layer has to rediscover them. A
caller that passes only position ids still gets the right segments: they are then derived from the
text position row (a new segment wherever the position does not step by +1, transformers' own rule).

Everything that is not a padding-free causal self-attention goes to transformers' ``sdpa`` unchanged:
a padded batch (its 2-D attention mask becomes the usual 4-D one), decoding with a cache,
bidirectional attention. The vision tower keeps its own path (``sdpa``, per image): only the text
config gets a packed implementation (``attn_implementation_for``). It must not be a flash one there:
the varlen keyword arguments reach the vision blocks too, and the flash vision path passes its own
``cu_seq_lens_q`` (a duplicate keyword).
"""

from __future__ import annotations

import functools
import importlib.util
import inspect
import warnings
from collections import Counter
from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from transformers import AttentionInterface
from transformers.integrations.sdpa_attention import sdpa_attention_forward
from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

from coordexp.errors import ConfigError, ConfigWarning

PACKED, PACKED_SDPA, PACKED_TORCH_VARLEN, PACKED_FA_VARLEN = (
    "packed",
    "packed_sdpa",
    "packed_torch_varlen",
    "packed_fa_varlen",
)
PACKED_IMPLS = (PACKED, PACKED_SDPA, PACKED_TORCH_VARLEN, PACKED_FA_VARLEN)
VISION_IMPL = "sdpa"  # the vision tower's own per-image path
DENSE_MASK_IMPLS = ("sdpa", "eager")  # build an L x L block-diagonal mask for a packed row
_HALF = (torch.float16, torch.bfloat16)

# Segment-attention calls per kernel actually run (one per layer and forward); ``packed`` resolves
# to one of the three, so a GPU run that silently fell back to per-segment SDPA shows here.
KERNEL_CALLS: Counter[str] = Counter()
_WARNED: set[str] = set()


@functools.cache
def _flash_varlen() -> Callable | None:
    if importlib.util.find_spec("flash_attn") is None:
        return None
    from flash_attn import flash_attn_varlen_func

    return flash_attn_varlen_func


@functools.cache
def _torch_varlen() -> tuple[Callable, frozenset[str]] | None:
    if importlib.util.find_spec("torch.nn.attention.varlen") is None:
        return None
    from torch.nn.attention.varlen import varlen_attn

    return varlen_attn, frozenset(inspect.signature(varlen_attn).parameters)


def _half_dtype(query: torch.Tensor) -> torch.dtype | None:
    """The fp16/bf16 dtype a flash kernel would run in (the query's, else the autocast one), or None."""
    if query.dtype in _HALF:
        return query.dtype
    kind = query.device.type
    if torch.is_autocast_enabled(kind) and torch.get_autocast_dtype(kind) in _HALF:
        return torch.get_autocast_dtype(kind)
    return None


def kernel_available(kernel: str, device: torch.device | str, dtype: torch.dtype | None) -> bool:
    """Whether ``kernel`` (one of the explicit ``packed_*`` names) can run on ``device`` in ``dtype``.

    ``dtype`` is the compute dtype (fp16/bf16 for the varlen kernels); ``None`` means full precision.
    """
    if kernel == PACKED_SDPA:
        return True
    if torch.device(device).type != "cuda" or dtype not in _HALF:
        return False
    if kernel == PACKED_FA_VARLEN:
        return _flash_varlen() is not None
    if kernel == PACKED_TORCH_VARLEN:
        return _torch_varlen() is not None
    raise ConfigError(f"unknown packed attention kernel {kernel!r}; known: {list(PACKED_IMPLS[1:])}")


def resolve_kernel(impl: str, device: torch.device | str, dtype: torch.dtype | None) -> str:
    """The kernel ``model.attn_impl: impl`` runs on ``device`` in ``dtype``; an explicit one must be runnable."""
    if impl == PACKED:
        order = (PACKED_FA_VARLEN, PACKED_TORCH_VARLEN, PACKED_SDPA)
        return next(k for k in order if kernel_available(k, device, dtype))
    if not kernel_available(impl, device, dtype):
        raise ConfigError(
            f"model.attn_impl: {impl} cannot run on {torch.device(device).type} in {dtype} (it needs CUDA, "
            f"fp16/bf16 compute{' and flash-attn installed' if impl == PACKED_FA_VARLEN else ''}); "
            f"use `{PACKED}` to pick the best kernel present, or `{PACKED_SDPA}`"
        )
    return impl


def _sdpa_segments(q, k, v, cu: torch.Tensor, max_len: int, scaling, dropout: float) -> torch.Tensor:
    """Per-segment causal SDPA on [T, H, D] tensors; cost sum(l_i^2), no mask."""
    lengths = (cu[1:] - cu[:-1]).tolist()
    gqa = q.shape[1] != k.shape[1]
    outs = [
        F.scaled_dot_product_attention(
            qi.transpose(0, 1), ki.transpose(0, 1), vi.transpose(0, 1),
            dropout_p=dropout, is_causal=True, scale=scaling, enable_gqa=gqa,
        ).transpose(0, 1)
        for qi, ki, vi in zip(q.split(lengths), k.split(lengths), v.split(lengths))
    ]  # fmt: skip
    return torch.cat(outs)


def _fa_varlen(q, k, v, cu: torch.Tensor, max_len: int, scaling, dropout: float) -> torch.Tensor:
    fn = _flash_varlen()
    return fn(q, k, v, cu, cu, max_len, max_len, dropout_p=dropout, softmax_scale=scaling, causal=True)


def _torch_varlen_attn(q, k, v, cu: torch.Tensor, max_len: int, scaling, dropout: float) -> torch.Tensor:
    if dropout:
        raise ConfigError("model.attn_impl: packed_torch_varlen has no attention dropout; use packed_fa_varlen or packed_sdpa")
    fn, params = _torch_varlen()
    kwargs: dict[str, Any] = {"scale": scaling}
    if "window_size" in params:
        kwargs["window_size"] = (-1, 0)  # causal
    else:
        kwargs["is_causal"] = True
    if q.shape[1] != k.shape[1]:
        if "enable_gqa" in params:
            kwargs["enable_gqa"] = True
        else:
            k, v = (t.repeat_interleave(q.shape[1] // k.shape[1], dim=1) for t in (k, v))
    return fn(q, k, v, cu, cu, max_len, max_len, **kwargs)


_KERNELS = {PACKED_SDPA: _sdpa_segments, PACKED_FA_VARLEN: _fa_varlen, PACKED_TORCH_VARLEN: _torch_varlen_attn}


def _segment_bounds(query: torch.Tensor, kwargs: dict[str, Any]) -> tuple[torch.Tensor, int] | None:
    """(cu_seqlens over the flattened [B * L] tokens, longest segment), or None for one plain sequence."""
    batch, _, length, _ = query.shape
    cu = kwargs.get("cu_seq_lens_q")
    if cu is not None:
        cu_k = kwargs.get("cu_seq_lens_k")
        if cu_k is not None and cu_k is not cu and not torch.equal(cu_k, cu):
            raise ConfigError("packed attention is self-attention: cu_seq_lens_k must equal cu_seq_lens_q")
        max_len = kwargs.get("max_length_q") or int((cu[1:] - cu[:-1]).max())
        return cu.to(device=query.device, dtype=torch.int32), int(max_len)
    pos = kwargs.get("position_ids")
    if pos is None or pos.shape[-1] != length:
        return None
    flat = pos.expand(batch, length).reshape(-1)
    starts = torch.ones_like(flat, dtype=torch.bool)
    starts[1:] = flat[1:] != flat[:-1] + 1
    starts[::length] = True  # a segment never spans two batch rows
    idx = starts.nonzero().flatten()
    if idx.numel() == batch:  # one sequence per row: plain causal attention
        return None
    cu = torch.cat([idx, idx.new_tensor([flat.numel()])]).to(torch.int32)
    return cu, int((cu[1:] - cu[:-1]).max())


def _packed_attention(
    module: torch.nn.Module,
    query: torch.Tensor,  # [B, Hq, L, D]
    key: torch.Tensor,  # [B, Hkv, L, D]
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    dropout: float = 0.0,
    scaling: float | None = None,
    is_causal: bool | None = None,
    *,
    impl: str,
    **kwargs: Any,
) -> tuple[torch.Tensor, None]:
    causal = is_causal if is_causal is not None else getattr(module, "is_causal", True)
    plain = attention_mask is not None or not causal or query.shape[2] != key.shape[2]
    bounds = None if plain else _segment_bounds(query, kwargs)
    if bounds is None:
        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout, scaling, is_causal, **kwargs)
    if getattr(module, "sliding_window", None):
        raise ConfigError(f"model.attn_impl: {impl} has no sliding-window attention; use sdpa for this model")
    cu, max_len = bounds
    half = _half_dtype(query)
    kernel = resolve_kernel(impl, query.device, half)
    batch, heads, length, dim = query.shape
    q, k, v = (t.transpose(1, 2).reshape(batch * length, t.shape[1], dim) for t in (query, key, value))
    if kernel != PACKED_SDPA:  # flash kernels run in fp16/bf16 only (rotary output may be fp32 under autocast)
        q, k, v = q.to(half), k.to(half), v.to(half)
    out = _KERNELS[kernel](q, k, v, cu, max_len, scaling, dropout)
    KERNEL_CALLS[kernel] += 1
    return out.reshape(batch, length, heads, dim), None


def _packed_mask(
    batch_size: int,
    q_length: int,
    kv_length: int,
    q_offset: int = 0,
    kv_offset: int = 0,
    attention_mask: torch.Tensor | None = None,
    **kwargs: Any,
) -> torch.Tensor | None:
    """No mask for a padding-free causal row (the attention reads the segment bounds); else sdpa's.

    Overlays that only a materialised mask can express (``use_vmap``: custom or/and mask functions) and
    anything with padding or a cache offset get transformers' sdpa mask, which the attention passes on.
    """
    offsets_zero = not isinstance(q_offset, torch.Tensor) and q_offset == 0 and kv_offset == 0
    if attention_mask is None and offsets_zero and q_length == kv_length and not kwargs.get("use_vmap"):
        return None
    return sdpa_mask(
        batch_size=batch_size, q_length=q_length, kv_length=kv_length, q_offset=q_offset, kv_offset=kv_offset,
        attention_mask=attention_mask, **kwargs,
    )  # fmt: skip


def register() -> None:
    """Make the ``packed*`` names known to transformers (idempotent; done on import)."""
    for impl in PACKED_IMPLS:
        AttentionInterface.register(impl, functools.partial(_packed_attention, impl=impl))
        AttentionMaskInterface.register(impl, _packed_mask)


register()


def attn_implementation_for(attn_impl: str) -> str | dict[str, str]:
    """What to hand transformers for ``model.attn_impl``: packed names go to the text model only."""
    if attn_impl in PACKED_IMPLS:
        return {"text_config": attn_impl, "vision_config": VISION_IMPL}
    return attn_impl


def text_attn_impl(model: torch.nn.Module) -> str:
    """The attention implementation of the language model inside ``model`` (DDP/PEFT unwrapped)."""
    from coordexp.learn.model import unwrap

    config = unwrap(model).config
    text = getattr(config, "text_config", None) or config
    return text._attn_implementation


def check_attention(model: torch.nn.Module, device: torch.device, compute_dtype: torch.dtype | None) -> str | None:
    """Fail before the first forward when a pinned kernel cannot run; returns the packed kernel, if any.

    ``compute_dtype`` is the autocast dtype (None: the weights' own precision). ``packed`` falling back
    to per-segment SDPA on CUDA (no flash-attn, no torch varlen, or fp32 compute) is correct but slow,
    so it warns once; the per-call choice is counted in ``KERNEL_CALLS``.
    """
    impl = text_attn_impl(model)
    if impl not in PACKED_IMPLS:
        return None
    kernel = resolve_kernel(impl, device, compute_dtype)
    if impl == PACKED and kernel == PACKED_SDPA and torch.device(device).type == "cuda" and impl not in _WARNED:
        _WARNED.add(impl)
        warnings.warn(
            f"model.attn_impl: {PACKED} on CUDA runs one SDPA call per segment here (compute dtype {compute_dtype}; "
            f"flash-attn {'present' if _flash_varlen() else 'absent'}, torch varlen "
            f"{'present' if _torch_varlen() else 'absent'}): correct, but slower than a varlen kernel; install "
            "flash-attn or train under training.bf16",
            ConfigWarning,
            stacklevel=2,
        )
    return kernel


def _warn_dense_mask(impl: str, segment_lengths: Sequence[int]) -> None:
    if impl in _WARNED:
        return
    _WARNED.add(impl)
    total = sum(segment_lengths)
    useful = sum(n * n for n in segment_lengths)
    warnings.warn(
        f"model.attn_impl: {impl} with packed rows builds a dense {total} x {total} block-diagonal mask and "
        f"attends over all of it: {total * total / 1e6:.1f}M score pairs per head and layer for "
        f"{useful / 1e6:.1f}M useful ones in this pack (cost quadratic in the pack length). Set "
        f"model.attn_impl: {PACKED} (flash-attn / torch varlen, else per-segment SDPA; no L x L mask).",
        stacklevel=3,
    )


def packed_forward_kwargs(
    model: torch.nn.Module, cu_seqlens: Sequence[int], *, device: torch.device
) -> dict[str, Any]:
    """The varlen keyword arguments for the forward of one padding-free packed row.

    ``cu_seqlens`` are the row's segment bounds (``TrainBatch.cu_seqlens``). Empty unless the language
    model runs a packed implementation and the row holds several segments. Under ``sdpa``/``eager`` on
    CUDA, where the dense mask is the expensive part, warns once with the cost and the fix.
    """
    lengths = [b - a for a, b in zip(cu_seqlens[:-1], cu_seqlens[1:])]
    if len(lengths) < 2:
        return {}
    impl = text_attn_impl(model)
    if impl in DENSE_MASK_IMPLS and torch.device(device).type == "cuda":
        _warn_dense_mask(impl, lengths)
    if impl not in PACKED_IMPLS:
        return {}
    cu = torch.tensor(list(cu_seqlens), dtype=torch.int32, device=device)
    longest = max(lengths)
    return {"cu_seq_lens_q": cu, "cu_seq_lens_k": cu, "max_length_q": longest, "max_length_k": longest}
