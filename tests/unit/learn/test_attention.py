"""Packed attention: no L x L mask, per-segment causal attention, sdpa for everything else."""

from __future__ import annotations

import warnings

import pytest
import torch
import torch.nn.functional as F
from transformers import AttentionInterface
from transformers.masking_utils import create_causal_mask

from coordexp.config.schema_model import TunerConfig
from coordexp.data.tiny import build_tiny_qwen3vl
from coordexp.errors import ConfigError, ConfigWarning
from coordexp.learn import attention
from coordexp.learn.attention import (
    KERNEL_CALLS,
    PACKED,
    PACKED_FA_VARLEN,
    PACKED_SDPA,
    PACKED_TORCH_VARLEN,
    attn_implementation_for,
    check_attention,
    kernel_available,
    packed_forward_kwargs,
    resolve_kernel,
)
from coordexp.learn.model import load_model
from coordexp.learn.packed import pack_segments, pad_segments
from coordexp.learn.tiny_segments import tiny_segments


class _Attn(torch.nn.Module):
    """The attributes transformers' attention functions read from the calling layer."""

    def __init__(self, groups: int) -> None:
        super().__init__()
        self.is_causal = True
        self.num_key_value_groups = groups


def _block_causal_reference(q, k, v, lengths):
    """Dense block-diagonal causal attention [B, H, L, D] -> [B, L, H, D], the cost the kernels avoid."""
    seg = torch.repeat_interleave(torch.arange(len(lengths)), torch.tensor(lengths))
    idx = torch.arange(seg.numel())
    allowed = (seg[:, None] == seg[None, :]) & (idx[:, None] >= idx[None, :])
    rep = q.shape[1] // k.shape[1]
    k, v = k.repeat_interleave(rep, 1), v.repeat_interleave(rep, 1)
    return F.scaled_dot_product_attention(q, k, v, attn_mask=allowed).transpose(1, 2)


def _qkv(length, heads=4, kv_heads=2, dim=8, seed=0, device="cpu", dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(1, heads, length, dim, generator=g)
    k, v = (torch.randn(1, kv_heads, length, dim, generator=g) for _ in range(2))
    return (t.to(device, dtype) for t in (q, k, v))


def _cuda_kernel(kernel):
    present = torch.cuda.is_available() and kernel_available(kernel, "cuda", torch.bfloat16)
    return pytest.param(
        kernel, "cuda", marks=[pytest.mark.gpu, pytest.mark.skipif(not present, reason=f"{kernel} needs CUDA")]
    )


@pytest.mark.parametrize(
    ("impl", "device"),
    [
        (PACKED_SDPA, "cpu"),
        (PACKED, "cpu"),
        _cuda_kernel(PACKED_SDPA),
        _cuda_kernel(PACKED_TORCH_VARLEN),
        _cuda_kernel(PACKED_FA_VARLEN),
    ],
)
def test_kernel_equals_dense_block_diagonal_attention(impl, device):
    lengths = [5, 1, 9, 3]
    dtype = torch.float32 if device == "cpu" else torch.bfloat16
    q, k, v = _qkv(sum(lengths), device=device, dtype=dtype)
    cu = torch.tensor([0, 5, 6, 15, 18], dtype=torch.int32, device=device)
    fn = AttentionInterface()[impl]
    expected_kernel = resolve_kernel(impl, device, None if dtype == torch.float32 else dtype)
    before = KERNEL_CALLS[expected_kernel]
    out, _ = fn(_Attn(2), q, k, v, None, scaling=0.3, cu_seq_lens_q=cu, cu_seq_lens_k=cu, max_length_q=9)
    assert KERNEL_CALLS[expected_kernel] == before + 1
    ref = _block_causal_reference(q.float().cpu() * 0.3 / 8**-0.5, k.float().cpu(), v.float().cpu(), lengths)
    tol = 1e-5 if dtype == torch.float32 else 2e-2
    torch.testing.assert_close(out.float().cpu(), ref, atol=tol, rtol=tol)


def test_bounds_from_position_ids_match_the_batch_bounds_and_rows_never_merge():
    """Two batch rows, each packing two segments; positions alone give the same segments."""
    q, k, v = _qkv(7, seed=1)
    q, k, v = (torch.cat([t, t.flip(2)]) for t in (q, k, v))
    pos = torch.tensor([[0, 1, 2, 0, 1, 2, 3], [0, 1, 2, 3, 4, 0, 1]])
    fn = AttentionInterface()[PACKED_SDPA]
    out, _ = fn(_Attn(2), q, k, v, None, scaling=8**-0.5, position_ids=pos)
    for row, row_lengths in enumerate(([3, 4], [5, 2])):
        ref = _block_causal_reference(q[row : row + 1], k[row : row + 1], v[row : row + 1], row_lengths)
        torch.testing.assert_close(out[row : row + 1], ref, atol=1e-5, rtol=1e-5)
    cu = torch.tensor([0, 3, 7, 12, 14], dtype=torch.int32)
    passed, _ = fn(_Attn(2), q, k, v, None, scaling=8**-0.5, cu_seq_lens_q=cu, cu_seq_lens_k=cu)
    torch.testing.assert_close(passed, out, atol=0, rtol=0)


def test_anything_but_a_packed_causal_row_runs_as_sdpa():
    q, k, v = _qkv(6, seed=2)
    fn, sdpa = AttentionInterface()[PACKED], AttentionInterface()["sdpa"]
    before = dict(KERNEL_CALLS)
    plain = fn(_Attn(2), q, k, v, None, scaling=0.3, position_ids=torch.arange(6)[None])[0]
    torch.testing.assert_close(plain, sdpa(_Attn(2), q, k, v, None, scaling=0.3)[0], atol=0, rtol=0)
    mask = torch.ones(1, 1, 6, 6, dtype=torch.bool).tril()
    masked = fn(_Attn(2), q, k, v, mask, scaling=0.3, cu_seq_lens_q=torch.tensor([0, 2, 6], dtype=torch.int32))[0]
    torch.testing.assert_close(masked, sdpa(_Attn(2), q, k, v, mask, scaling=0.3)[0], atol=0, rtol=0)
    bidir = fn(_Attn(2), q, k, v, None, scaling=0.3, is_causal=False, cu_seq_lens_q=torch.tensor([0, 2, 6]))[0]
    torch.testing.assert_close(bidir, sdpa(_Attn(2), q, k, v, None, scaling=0.3, is_causal=False)[0], atol=0, rtol=0)
    assert dict(KERNEL_CALLS) == before


@pytest.fixture(scope="module")
def tiny():
    return build_tiny_qwen3vl(seed=0)


def test_mask_interface_never_builds_the_packed_mask(tiny):
    model, processor = tiny.model, tiny.processor
    segments = tiny_segments(processor, 3, seed=4)
    row = pack_segments(segments, model=model)
    text_pos = row.inputs["position_ids"][0]
    length = text_pos.shape[-1]
    embeds = torch.zeros(1, length, 32)
    config = model.config.text_config
    for impl, expect_dense in (("sdpa", True), (PACKED, False)):
        model.set_attn_implementation(attn_implementation_for(impl))
        mask = create_causal_mask(config=config, inputs_embeds=embeds, attention_mask=None, cache=None, position_ids=text_pos)
        assert (mask is not None and tuple(mask.shape) == (1, 1, length, length)) is expect_dense, impl
    padded = pad_segments(segments, pad_token_id=processor.tokenizer.pad_token_id)
    pad_mask, width = padded.inputs["attention_mask"], padded.inputs["attention_mask"].shape[1]
    masks = {}
    for impl in ("sdpa", PACKED):
        model.set_attn_implementation(attn_implementation_for(impl))
        masks[impl] = create_causal_mask(
            config=config, inputs_embeds=torch.zeros(3, width, 32), attention_mask=pad_mask, cache=None
        )
    assert masks["sdpa"].shape == (3, 1, width, width) and torch.equal(masks["sdpa"], masks[PACKED])


def test_packed_model_forward_equals_sdpa_with_and_without_passed_bounds(tiny):
    model, processor = tiny.model, tiny.processor
    segments = tiny_segments(processor, 3, seed=6)
    row = pack_segments(segments, model=model)
    model.set_attn_implementation("sdpa")
    assert packed_forward_kwargs(model, row.cu_seqlens, device=torch.device("cpu")) == {}  # nothing to pass
    with torch.no_grad():
        dense = model(**row.inputs, use_cache=False).logits
        model.set_attn_implementation(attn_implementation_for(PACKED))
        kwargs = packed_forward_kwargs(model, row.cu_seqlens, device=torch.device("cpu"))
        assert kwargs["cu_seq_lens_q"].tolist() == list(row.cu_seqlens) and kwargs["max_length_q"] == max(row.segment_lengths)
        before = KERNEL_CALLS[PACKED_SDPA]
        derived = model(**row.inputs, use_cache=False).logits
        passed = model(**row.inputs, **kwargs, use_cache=False).logits
    layers = model.config.text_config.num_hidden_layers
    assert KERNEL_CALLS[PACKED_SDPA] == before + 2 * layers  # every text layer, both forwards; not the vision tower
    torch.testing.assert_close(derived, dense, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(passed, derived, atol=0, rtol=0)
    assert packed_forward_kwargs(model, row.cu_seqlens[:2], device=torch.device("cpu")) == {}  # one segment


def test_dense_mask_on_cuda_warns_once_with_cost_and_fix(tiny, monkeypatch):
    monkeypatch.setattr(attention, "_WARNED", set())
    tiny.model.set_attn_implementation("sdpa")
    cuda = torch.device("cuda")  # only decides the warning: sdpa passes no tensors
    with pytest.warns(UserWarning, match=r"dense 4096 x 4096 .* 16\.8M score pairs .* 2\.1M useful .*model\.attn_impl: packed"):
        assert packed_forward_kwargs(tiny.model, tuple(range(0, 4097, 512)), device=cuda) == {}
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        packed_forward_kwargs(tiny.model, tuple(range(0, 4097, 512)), device=cuda)
        packed_forward_kwargs(tiny.model, tuple(range(0, 4097, 512)), device=torch.device("cpu"))


def test_kernel_resolution_and_refusals():
    assert resolve_kernel(PACKED, "cpu", None) == PACKED_SDPA
    assert resolve_kernel(PACKED, "cpu", torch.bfloat16) == PACKED_SDPA
    assert resolve_kernel(PACKED_SDPA, "cuda", None) == PACKED_SDPA
    for kernel in (PACKED_TORCH_VARLEN, PACKED_FA_VARLEN):
        assert not kernel_available(kernel, "cpu", torch.bfloat16)
        assert not kernel_available(kernel, "cuda", None)  # full precision: no flash kernel
        with pytest.raises(ConfigError, match=f"model.attn_impl: {kernel} cannot run on cpu"):
            resolve_kernel(kernel, "cpu", torch.bfloat16)


def test_loaded_model_packs_the_text_model_only(tmp_path):
    build_tiny_qwen3vl(seed=3, out_dir=tmp_path)
    full = TunerConfig(train_type="full")
    for source in (tmp_path, "tiny"):
        config = load_model(source, dtype="float32", tuner_cfg=full, attn_impl=PACKED).model.config
        assert config.text_config._attn_implementation == PACKED
        assert config.vision_config._attn_implementation == "sdpa"
    plain = load_model(tmp_path, dtype="float32", tuner_cfg=full, attn_impl="eager").model.config
    assert plain.text_config._attn_implementation == plain.vision_config._attn_implementation == "eager"


def test_check_attention_refuses_a_pinned_kernel_early_and_warns_on_a_slow_cuda_fallback(tiny, monkeypatch):
    monkeypatch.setattr(attention, "_WARNED", set())
    model, cpu, cuda = tiny.model, torch.device("cpu"), torch.device("cuda")
    model.set_attn_implementation("sdpa")
    assert check_attention(model, cpu, torch.bfloat16) is None
    model.set_attn_implementation(attn_implementation_for(PACKED_TORCH_VARLEN))
    with pytest.raises(ConfigError, match="packed_torch_varlen cannot run on cpu"):
        check_attention(model, cpu, torch.bfloat16)
    model.set_attn_implementation(attn_implementation_for(PACKED))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert check_attention(model, cpu, torch.bfloat16) == PACKED_SDPA  # the CPU path: nothing to warn about
    with pytest.warns(ConfigWarning, match="one SDPA call per segment"):
        assert check_attention(model, cuda, None) == PACKED_SDPA  # fp32 compute: no flash kernel applies
