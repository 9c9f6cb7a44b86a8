"""A saved tiny model, and a checkpoint coordexp exports, carry what vLLM needs to serve them."""

from __future__ import annotations

import json

from coordexp.config.schema_model import TunerConfig
from coordexp.data.servable import VIDEO_CONFIG_FILE
from coordexp.data.tiny import SERVABLE_HEAD_DIM, build_servable_tiny_qwen3vl, build_tiny_qwen3vl
from coordexp.learn.checkpoint import export_pretrained
from coordexp.learn.model import load_model, load_processor


def test_the_servable_tiny_model_has_heads_of_32_and_a_video_processor_config(tmp_path):
    tiny = build_servable_tiny_qwen3vl(seed=0, out_dir=tmp_path)
    text = tiny.model.config.text_config
    assert text.head_dim == SERVABLE_HEAD_DIM and sum(text.rope_parameters["mrope_section"]) == SERVABLE_HEAD_DIM // 2
    video = json.loads((tmp_path / VIDEO_CONFIG_FILE).read_text(encoding="utf-8"))
    image = tiny.processor.image_processor
    assert video["video_processor_type"] == "Qwen3VLVideoProcessor" and video["processor_class"] == "Qwen3VLProcessor"
    assert (video["patch_size"], video["merge_size"], video["temporal_patch_size"]) == (16, 2, 2)
    assert video["size"] == {"shortest_edge": image.size["shortest_edge"], "longest_edge": image.size["longest_edge"]}
    assert not hasattr(load_processor(tmp_path), "video_processor")  # coordexp itself still loads it image-only


def test_the_default_tiny_model_keeps_its_head_dim():
    assert build_tiny_qwen3vl(seed=0).model.config.text_config.head_dim == 8


def test_an_exported_checkpoint_is_servable(tmp_path):
    src = build_servable_tiny_qwen3vl(seed=0, out_dir=tmp_path / "src")
    loaded = load_model(src.path, dtype="float32", attn_impl="sdpa", tuner_cfg=TunerConfig(lora_rank=4, lora_alpha=8))
    out = export_pretrained(loaded.model, loaded.processor, loaded.coord_ids, tmp_path / "export")
    assert json.loads((out / VIDEO_CONFIG_FILE).read_text(encoding="utf-8"))["size"] == json.loads(
        (tmp_path / "src" / VIDEO_CONFIG_FILE).read_text(encoding="utf-8"))["size"]
