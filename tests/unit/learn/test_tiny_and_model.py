"""Tiny model builders and checkpoint loading: determinism, coord vocabulary expansion, tuner wiring."""

from __future__ import annotations

import json

import pytest
import torch

from coordexp.config.schema_model import TunerConfig
from coordexp.core.coords import COORD_TOKENS
from coordexp.data.tiny import build_tiny_qwen2_5vl, build_tiny_qwen3vl, fixture_tokenizer
from coordexp.errors import ConfigError, TokenizerError
from coordexp.learn.model import ensure_coord_vocab, load_model, load_processor
from coordexp.learn.tuner import part_of, target_module_names

FULL = TunerConfig(train_type="full")


@pytest.mark.parametrize("build", [build_tiny_qwen3vl, build_tiny_qwen2_5vl])
def test_same_seed_gives_bitwise_identical_weights(build):
    a, b, c = build(seed=7).model.state_dict(), build(seed=7).model.state_dict(), build(seed=8).model.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert any(not torch.equal(a[k], c[k]) for k in a)


def test_build_does_not_disturb_the_callers_rng():
    torch.manual_seed(1)
    expected = torch.rand(3)
    torch.manual_seed(1)
    build_tiny_qwen3vl(seed=0)
    assert torch.equal(torch.rand(3), expected)


@pytest.mark.parametrize("build", [build_tiny_qwen3vl, build_tiny_qwen2_5vl])
def test_saved_tiny_model_loads_like_a_checkpoint(tmp_path, build):
    tiny = build(seed=2, out_dir=tmp_path)
    loaded = load_model(tmp_path, dtype="float32", tuner_cfg=FULL, attn_impl="sdpa")
    assert loaded.added_coord_tokens == 0
    assert loaded.family == json.loads((tmp_path / "config.json").read_text())["model_type"]
    want = tiny.model.state_dict()
    assert all(torch.equal(v, want[k]) for k, v in loaded.model.state_dict().items())
    assert loaded.coord_ids == tuple(tiny.processor.tokenizer.convert_tokens_to_ids(list(COORD_TOKENS)))


def test_checkpoint_without_coord_tokens_gets_them_added_and_tied(tmp_path):
    base = build_tiny_qwen3vl(seed=3, out_dir=tmp_path, tokenizer=fixture_tokenizer(coord_vocab=False))
    old = base.model.get_input_embeddings().weight.detach()
    assert old.shape[0] == len(base.processor.tokenizer)
    loaded = load_model(tmp_path, dtype="float32", tuner_cfg=FULL, attn_impl="sdpa")
    model, tok = loaded.model, loaded.processor.tokenizer
    emb = model.get_input_embeddings().weight
    assert loaded.added_coord_tokens == len(COORD_TOKENS)
    assert emb.shape[0] == len(tok) == old.shape[0] + len(COORD_TOKENS)
    assert model.get_output_embeddings().weight is emb, "input and output embeddings must stay tied"
    assert torch.equal(emb[: old.shape[0]], old), "existing rows must not move"
    assert loaded.coord_ids == tuple(range(old.shape[0], old.shape[0] + len(COORD_TOKENS)))
    assert tok.decode([loaded.coord_ids[5]], skip_special_tokens=True) == "<|coord_5|>"
    # the processor loaded on its own agrees with the resized model
    assert load_processor(tmp_path).tokenizer.convert_tokens_to_ids("<|coord_999|>") == loaded.coord_ids[-1]


def test_added_coord_rows_train_under_lora(tmp_path):
    build_tiny_qwen3vl(seed=3, out_dir=tmp_path, tokenizer=fixture_tokenizer(coord_vocab=False))
    loaded = load_model(tmp_path, dtype="float32", tuner_cfg=TunerConfig(), attn_impl="sdpa")
    trainable = [n for n, p in loaded.model.named_parameters() if p.requires_grad]
    assert any("trainable_tokens_delta" in n for n in trainable)


def test_partial_coord_vocabulary_is_rejected():
    tok = fixture_tokenizer(coord_vocab=False)
    tok.add_tokens(["<|coord_0|>"], special_tokens=False)
    with pytest.raises(TokenizerError, match="1 of the 1000 coord tokens"):
        ensure_coord_vocab(tok)


def test_not_a_checkpoint_directory(tmp_path):
    with pytest.raises(ConfigError, match="no config.json"):
        load_model(tmp_path, dtype="float32", tuner_cfg=FULL, attn_impl="sdpa")


def test_lora_targets_the_language_model_and_aligner_not_the_vision_tower():
    loaded = load_model("tiny", dtype="float32", tuner_cfg=TunerConfig(), attn_impl="sdpa")
    trainable = [n for n, p in loaded.model.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n for n in trainable)
    parts = {part_of(n) for n in trainable}
    assert parts == {"llm", "aligner"}


def test_target_module_names_follow_freeze_flags_and_kinds():
    model = build_tiny_qwen3vl(seed=0).model
    names = target_module_names(model, TunerConfig(target_modules=("q_proj", "v_proj"), freeze_aligner=True))
    assert names and all(n.endswith(("q_proj", "v_proj")) and part_of(n) == "llm" for n in names)
    with_vit = target_module_names(model, TunerConfig(freeze_vit=False))
    assert any(part_of(n) == "vision" for n in with_vit)
    assert not any(n.startswith("lm_head") for n in with_vit)
    with pytest.raises(ConfigError, match="matches no linear layer"):
        target_module_names(model, TunerConfig(target_modules=("nope",)))


def test_full_tuning_freezes_the_vision_tower_by_default():
    loaded = load_model("tiny", dtype="float32", tuner_cfg=FULL, attn_impl="sdpa")
    frozen = {part_of(n) for n, p in loaded.model.named_parameters() if not p.requires_grad}
    assert frozen == {"vision"}
