"""Prompts, chat messages and the GT answer: built-in wording, config overrides, object ordering."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image

from coordexp.config.schema_root import CustomConfig
from coordexp.core.coordjson import GeomType, GTObject, Layout, serialize
from coordexp.core.tokens import TokenContext, char_context
from coordexp.data.prompts import (
    Prompts,
    build_messages,
    default_prompts,
    gt_answer_ids,
    gt_answer_text,
    resolve_prompts,
)
from coordexp.data.records import Sample
from coordexp.data.tokenizer import fixture_tokenizer_path
from coordexp.errors import ConfigError, DataError

LOW = GTObject(1, "low dog", GeomType.BBOX, (10, 700, 50, 800))
HIGH = GTObject(2, "high cat", GeomType.POLY, (100, 100, 200, 100, 150, 200))
SAMPLE = Sample("s1", (Image.new("RGB", (8, 8)),), 8, 8, (LOW, HIGH), "test.jsonl:1")


def custom(**kw: object) -> CustomConfig:
    return CustomConfig(trainer_variant="rollout_matching_sft", **kw)


def test_builtin_prompts_follow_ordering_and_layout():
    sorted_, random_ = default_prompts("sorted"), default_prompts("random")
    assert "top to bottom" in sorted_.user and "any order" in random_.user
    assert sorted_.system == random_.system and "object_1, object_2" in sorted_.system
    assert '"objects"' in default_prompts("sorted", layout=Layout.OBJECTS_ARRAY).system
    assert "answer {}" in sorted_.system  # the format braces survive .format
    assert resolve_prompts(custom()) == sorted_
    assert resolve_prompts(custom(object_ordering="random")).user == random_.user


def test_config_texts_and_files_override(tmp_path: Path):
    user_file = tmp_path / "user.txt"
    user_file.write_text("Boxes please.\n", encoding="utf-8")
    p = resolve_prompts(custom(user_prompt_file=str(user_file), system_prompt="Be brief."))
    assert p == Prompts(user="Boxes please.", system="Be brief.")
    sys_file = tmp_path / "system.txt"
    sys_file.write_text("From a file.", encoding="utf-8")
    assert resolve_prompts(custom(user_prompt="Hi", system_prompt_file=str(sys_file))) == Prompts("Hi", "From a file.")
    assert resolve_prompts(custom(system_prompt="")).system is None  # empty: no system turn
    with pytest.raises(ConfigError, match=r"custom.system_prompt_file: cannot read .*missing.txt"):
        resolve_prompts(custom(system_prompt_file=str(tmp_path / "missing.txt")))
    with pytest.raises(ConfigError, match="custom.user_prompt is empty"):
        resolve_prompts(custom(user_prompt="  "))


def test_messages_put_images_first_and_render_with_the_chat_template():
    from transformers import AutoTokenizer

    image = SAMPLE.images[0]
    msgs = build_messages(SAMPLE, [image], Prompts("Find things.", "Sys."))
    assert msgs == [
        {"role": "system", "content": "Sys."},
        {"role": "user", "content": [{"type": "image", "image": image}, {"type": "text", "text": "Find things."}]},
    ]
    assert [m["role"] for m in build_messages(SAMPLE, [image], Prompts("u", None))] == ["user"]
    tok = AutoTokenizer.from_pretrained(str(fixture_tokenizer_path()), local_files_only=True)
    text = tok.apply_chat_template(msgs, add_generation_prompt=True, tokenize=False)
    assert text == (
        "<|im_start|>system\nSys.<|im_end|>\n<|im_start|>user\n<|vision_start|><|image_pad|><|vision_end|>"
        "Find things.<|im_end|>\n<|im_start|>assistant\n"
    )
    with pytest.raises(DataError, match="got 0 image"):
        build_messages(SAMPLE, [], Prompts("u", None))


def test_gt_answer_follows_the_ordering():
    text = gt_answer_text(SAMPLE, "sorted")
    answer = json.loads(text)
    assert [v["desc"] for v in answer.values()] == ["high cat", "low dog"] and list(answer) == ["object_1", "object_2"]
    assert answer["object_1"]["poly"][0] == ["<|coord_100|>", "<|coord_100|>"]
    assert json.loads(gt_answer_text(SAMPLE, "sorted", layout=Layout.OBJECTS_ARRAY))["objects"][1]["desc"] == "low dog"
    empty = Sample("e", (), 8, 8, (), "x:1")
    assert gt_answer_text(empty, "sorted") == "{}"
    shuffled = {gt_answer_text(SAMPLE, "random", seed=s) for s in range(8)}
    assert shuffled == {text, serialize((LOW, HIGH))}  # both orders occur over seeds, always renumbered 1..N


def test_gt_answer_ids_end_with_eos_and_keep_coord_tokens_whole():
    from transformers import AutoTokenizer

    ctx = char_context()
    ids = gt_answer_ids(SAMPLE, "sorted", ctx=ctx)
    assert ids[-1] == ctx.im_end_id and ctx.text_of(ids[:-1]) == gt_answer_text(SAMPLE, "sorted")
    hf = TokenContext.from_hf(AutoTokenizer.from_pretrained(str(fixture_tokenizer_path()), local_files_only=True))
    hf_ids = gt_answer_ids(SAMPLE, "sorted", ctx=hf)
    assert sum(hf.is_coord(i) for i in hf_ids) == 10  # 6 poly + 4 bbox coordinates, one token each
    assert hf.text_of(hf_ids[:-1]) == gt_answer_text(SAMPLE, "sorted") and hf_ids[-1] == hf.im_end_id
