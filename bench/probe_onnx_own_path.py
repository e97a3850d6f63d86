"""Why the ahead-of-time backends compile only the dense stages, not the model's whole inference path.

(The backends in :mod:`monoocc_ros.inference.stages` compile the trunk and the proposal network and
run the rest on the model's own path; this probe shows what a whole-path trace would give instead.)

Traces a thin wrapper ``(image, K, T) -> model.predict(...)`` of an untrained ``tiny`` student with
the TorchScript ONNX exporter (the fused C kernels fall back to torch ops inside a trace), then
compares onnxruntime's labels with eager on new images: on the trace camera and on a moved one.
The trace records Python values as constants (query counts and chunk loops, the ``min_queries``
fallback, the per-camera geometry caches), so the graph only reproduces the traced frame. One
unrelated blocker (``F.layer_norm(x, x.shape[-1:])`` in ``voxel_inference.post_attention`` makes
the exporter fail) is patched here in-process so the probe reaches the comparison.

Usage:
    python bench/probe_onnx_own_path.py [--image-hw 96 320] [--out probe.json]

Prints (and writes) one JSON: export seconds, the source lines that became trace constants and the
label agreement per case.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn


def _post_attention_traceable(layer: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """voxel_inference.post_attention with the layers' constant normalized_shape (exportable)."""
    x = F.layer_norm(x, layer.norm1.normalized_shape, layer.norm1.weight, layer.norm1.bias, layer.norm1.eps)
    ffn = layer.ffn
    hidden = F.relu_(F.linear(x, ffn.fc1.weight, ffn.fc1.bias))
    x = torch.addmm(x, hidden, ffn.fc2.weight.t()).add_(ffn.fc2.bias)
    return F.layer_norm(x, layer.norm2.normalized_shape, layer.norm2.weight, layer.norm2.bias, layer.norm2.eps)


class OwnPath(nn.Module):
    """(1, 3, H, W) image, (1, 3, 3) K, (1, 4, 4) T -> (256, 256, 32) uint8 labels via model.predict."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, image, K, T):
        return self.model.predict(image, K, T)[0][0]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--image-hw", type=int, nargs=2, default=(96, 320))
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()

    import onnxruntime as ort

    from monoocc_ros.models import voxel_inference
    from monoocc_ros.models.config import get_model_config
    from monoocc_ros.models.monoocc import MonoOccStudent
    from monoocc_ros.predictor import warmup_camera

    voxel_inference.post_attention = _post_attention_traceable
    torch.manual_seed(0)
    model = MonoOccStudent(get_model_config("tiny")).eval()
    h, w = args.image_hw
    K, T = (torch.as_tensor(a, dtype=torch.float32)[None] for a in warmup_camera((h, w)))
    moved = T.clone()
    c, s = np.cos(0.3), np.sin(0.3)
    moved[0, :3, :3] = torch.tensor([[c, 0, s], [0, 1, 0], [-s, 0, c]], dtype=torch.float32) @ moved[0, :3, :3]
    moved[0, 0, 3] += 2.0
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "own_path.onnx"
        start = time.perf_counter()
        with torch.no_grad(), warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            torch.onnx.export(OwnPath(model), (torch.rand(1, 3, h, w), K, T), str(path), opset_version=17,
                              input_names=["image", "K", "T"], output_names=["labels"], dynamo=False)
        export_s = time.perf_counter() - start
        constants = sorted({
            f"{Path(x.filename).relative_to(Path(voxel_inference.__file__).parents[1])}:{x.lineno}"
            for x in caught if issubclass(x.category, torch.jit.TracerWarning) and "monoocc_ros" in x.filename
        })
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        agreement = {}
        for name, camera in (("trace_camera_new_image", T), ("moved_camera_new_image", moved)):
            image = torch.rand(1, 3, h, w)
            reference = model.predict(image, K, camera)[0][0].numpy()
            labels = session.run(None, {"image": image.numpy(), "K": K.numpy(), "T": camera.numpy()})[0]
            agreement[name] = float((labels == reference).mean())
    result = {"image_hw": [h, w], "export_s": round(export_s, 1), "trace_constants_at": constants,
              "label_agreement": agreement}
    text = json.dumps(result, indent=2)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
