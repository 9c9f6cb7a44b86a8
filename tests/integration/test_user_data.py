"""A user's own JSONL (real image files on disk) trains; a broken line stops before any model is built."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import yaml
from PIL import Image, ImageDraw

from coordexp.telemetry.sinks import read_log
from tests.integration.conftest import run_config

REPO = Path(__file__).resolve().parents[2]


def _write_dataset(folder: Path, n: int) -> Path:
    """``n`` JPEG/PNG files with one drawn box each, and a JSONL that refers to them by relative path."""
    lines = []
    for i in range(n):
        img = Image.new("RGB", (80, 60), (20, 20, 30))
        ImageDraw.Draw(img).rectangle([10 + i, 10, 50, 40], fill=(230, 40, 40))
        name = f"images/img_{i}.{'jpg' if i % 2 else 'png'}"
        (folder / "images").mkdir(parents=True, exist_ok=True)
        img.save(folder / name)
        box = [round(v) for v in ((10 + i) / 80 * 1000, 10 / 60 * 1000, 50 / 80 * 1000, 40 / 60 * 1000)]
        lines.append({"images": [name], "width": 80, "height": 60,
                      "objects": [{"desc": "red square", "bbox_2d": [f"<|coord_{b}|>" for b in box]}]})
    path = folder / "train.jsonl"
    path.write_text("".join(json.dumps(line) + "\n" for line in lines), encoding="utf-8")
    return path


def test_a_user_jsonl_trains(tmp_path, tiny):
    data = _write_dataset(tmp_path / "data", 4)
    cfg = tiny(custom__train_jsonl=str(data), custom__val_jsonl=str(data), training__max_steps=1,
               training__save_strategy="no")
    summary = run_config(tmp_path, cfg)
    train = [r for r in read_log(summary.run_dir / "logging.jsonl") if r.mode == "train"]
    assert len(train) == 1 and train[0].metrics["learn/segments"] == 2
    assert train[0].metrics["rollout/gt_objects"] == 2


def test_a_broken_line_fails_before_training_with_file_and_line(tmp_path, tiny):
    data = _write_dataset(tmp_path / "data", 3)
    lines = data.read_text(encoding="utf-8").splitlines()
    broken = json.loads(lines[1])
    broken["objects"][0]["bbox_2d"] = broken["objects"][0]["bbox_2d"][:3]
    lines[1] = json.dumps(broken)
    data.write_text("\n".join(lines) + "\n", encoding="utf-8")
    cfg = tiny(custom__train_jsonl=str(data))
    path = tmp_path / "broken.yaml"
    path.write_text(yaml.safe_dump(cfg), encoding="utf-8")
    done = subprocess.run([sys.executable, "-m", "coordexp.run", "--config", str(path)], capture_output=True,
                          text=True, timeout=300, cwd=REPO)
    assert done.returncode == 2
    assert f"{data}:2" in done.stderr and "bbox_2d" in done.stderr
    assert "Traceback" not in done.stderr
    assert not (tmp_path / "out").exists()  # nothing was trained or written


def test_an_image_gone_after_loading_is_dropped_and_counted(tmp_path, tiny, monkeypatch):
    """The JSONL check passed, then a file vanished: that sample is dropped at Rollout, counted, and named."""
    data = _write_dataset(tmp_path / "data", 4)
    cfg = tiny(custom__train_jsonl=str(data), training__max_steps=1, training__save_strategy="no",
               training__eval_strategy="no", training__effective_batch_size=4)
    from coordexp.data import dataset

    real = dataset.load_samples

    def load_then_lose(uri, **kwargs):
        samples = real(uri, **kwargs)
        if str(uri) == str(data):  # the training file: lose one of its images
            next((tmp_path / "data" / "images").iterdir()).unlink()
        return samples

    monkeypatch.setattr("coordexp.runtime.load_samples", load_then_lose)
    summary = run_config(tmp_path, cfg)
    [train] = [r for r in read_log(summary.run_dir / "logging.jsonl") if r.mode == "train"]
    assert train.metrics["rollout/dropped_samples/prompt_DataError"] == 1
    assert train.metrics["learn/segments"] == 3
    [trace] = [json.loads(line) for line in (summary.run_dir / "trace.jsonl").read_text().splitlines()]
    assert trace["dropped"] == {"prompt_DataError": 1}
