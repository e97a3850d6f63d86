#!/usr/bin/env bash
# GPU check (issue 13): every CUDA path of the student, the node replay at 10 Hz with monoocc_s, and
# one monoocc_s training step's peak memory, in one JSON document on stdout (about 10 minutes on an
# H100-class GPU). Without CUDA it says so in one line and exits 1.
#   bash bench/gpu_check.sh   (or: make bench-gpu)
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
set +u
# shellcheck disable=SC1091
[ -f scripts/env.sh ] && . scripts/env.sh
set -u
if ! python -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)' 2>/dev/null; then
  echo "gpu_check: no CUDA device (torch.cuda.is_available() is False): nothing measured" >&2
  exit 1
fi
OUT="$(mktemp -d)"
trap 'rm -rf "$OUT"' EXIT
run() {  # name, command...: the command's JSON into $OUT/name.json; a failure is recorded, not fatal
  local name="$1"; shift
  if ! timeout 300 "$@" >"$OUT/$name.json" 2>"$OUT/$name.err"; then
    python - "$name" "$OUT/$name.err" >"$OUT/$name.json" <<'PY'
import json, sys
err = open(sys.argv[2]).read().strip().splitlines()
print(json.dumps({"failed": sys.argv[1], "error": err[-1] if err else "no output"}))
PY
  fi
}
# fp16/bf16 autocast, channels-last, torch.compile, CUDA graphs, ONNX Runtime (CUDA provider)
run inference python bench/bench_inference.py --configs tiny monoocc_s --device cuda \
  --precisions fp32 fp16 bf16 --compile --cuda-graphs --onnx --warmup 3 --repeats 20
# TensorRT engines of the dense stages built ahead of time (the node's backend), then timed through it
run tensorrt python - <<'PY'
import json, tempfile, time
from pathlib import Path
import numpy as np, torch
from monoocc_ros.inference import build_backend, export_backend
from monoocc_ros.models.checkpoint import make_payload, save_checkpoint
from monoocc_ros.models.config import get_model_config
from monoocc_ros.models.monoocc import MonoOccStudent
from monoocc_ros.predictor import Predictor, warmup_camera
torch.manual_seed(0)
model = MonoOccStudent(get_model_config("monoocc_s")).eval()
hw = (370, 1226)
K, T = warmup_camera(hw)
image = (np.random.default_rng(0).random((*hw, 3)) * 255).astype(np.uint8)
with tempfile.TemporaryDirectory() as tmp:
    ckpt = save_checkpoint(Path(tmp) / "s.pt", make_payload(model, "monoocc_s"))
    export_backend("tensorrt", model, checkpoint_path=ckpt, image_hw=hw, precision="fp16", config_name="monoocc_s")
    trt = build_backend("tensorrt", model, checkpoint_path=ckpt, image_hw=hw, device="cuda", precision="fp16")
    trt.warmup(iterations=3)
    times = []
    for _ in range(20):
        start = time.perf_counter(); labels = trt.predict(image, K, T).labels; times.append(1000 * (time.perf_counter() - start))
    reference = Predictor(model, device="cuda").predict(image, K, T).labels
print(json.dumps({"tensorrt_fp16_ms_p50": round(float(np.median(times)), 2),
                  "label_agreement": round(float((labels == reference).mean()), 6)}))
PY
run node_replay python bench/bench_node_replay.py --config monoocc_s --device cuda --precision fp16
run train_step python bench/bench_train.py --model monoocc_s --role student --device cuda --precision bf16 --steps 1
python - "$OUT" <<'PY'
import json, sys
from pathlib import Path
import torch
out = {"benchmark": "gpu_check", "device": torch.cuda.get_device_name(0), "torch": torch.__version__}
for name in ("inference", "tensorrt", "node_replay", "train_step"):
    text = (Path(sys.argv[1]) / f"{name}.json").read_text().strip().splitlines()
    out[name] = json.loads(text[-1]) if text else {"failed": name, "error": "no output"}
print(json.dumps(out))
PY
