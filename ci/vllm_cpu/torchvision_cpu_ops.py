"""Lets PyPI's CUDA-built torchvision import next to a CPU-only torch (the `vllm` tox env only).

torchvision declares fake kernels for ``torchvision::nms`` and ``torchvision::qnms`` at import time, even
when its C extension failed to load; on torch+cpu the CUDA extension never loads, those operators do not
exist, and ``import torchvision`` dies. vLLM (through transformers' Qwen2-VL image and video processors)
only needs torchvision's pure-Python transforms, so this hook declares the two operator schemas just before
``torchvision._meta_registrations`` runs, and only when the C extension is missing. torchvision's files stay
untouched; ``prepare_env.py`` copies this module next to them with a ``.pth`` line that imports it.
"""

import importlib.abc
import sys

_META_MODULE = "torchvision._meta_registrations"
_MISSING_OP_SCHEMAS = {
    "nms": "(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
    "qnms": "(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
}


class _DeclareMissingTorchvisionOps(importlib.abc.MetaPathFinder):
    """Runs once, on the import of torchvision's meta registrations, then steps aside."""

    def find_spec(self, fullname, path=None, target=None):
        if fullname != _META_MODULE:
            return None
        sys.meta_path.remove(self)
        import torch
        import torchvision.extension

        if not torchvision.extension._has_ops():
            for op_name, schema in _MISSING_OP_SCHEMAS.items():
                torch.library.define(f"torchvision::{op_name}", schema)
        return None


sys.meta_path.insert(0, _DeclareMissingTorchvisionOps())
