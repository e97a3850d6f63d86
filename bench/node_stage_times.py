"""Run the MonoOcc node with a timer on each part of its per-frame path (for bench_node_replay.py).

The node is unchanged: its ``_process``, the predictor's ``predict`` and ``_publish`` are wrapped
here, in the benchmark, and each processed frame's times (monotonic seconds, one clock for every
process on the machine) are rewritten to ``OUT_JSON`` after the frame:

    {"frames": [{"arrived", "start", "predict_start", "predict_end", "publish_ms", "end",
                 "model_ms": {stage: ms}}, ...]}

    python bench/node_stage_times.py OUT_JSON --ros-args -p checkpoint_path:=... (the node's arguments)
"""

from __future__ import annotations

import json
import sys
import threading
import time
from pathlib import Path


def install(out: Path) -> None:
    """Wrap the node's per-frame methods; each frame appends one record and rewrites ``out``."""
    import monoocc_ros.ros.node as node_module
    from monoocc_ros.ros.node_outputs import NodeOutputs

    frames: list[dict] = []
    current = threading.local()  # the inference thread's frame record
    process, load, publish = (
        node_module.MonoOccNode._process,
        node_module.MonoOccNode._load_predictor,
        NodeOutputs._publish,
    )

    def timed_process(self, msg, arrived_s):
        current.frame = {"arrived": arrived_s, "start": time.monotonic()}
        process(self, msg, arrived_s)
        current.frame["end"] = time.monotonic()
        if "predict_end" in current.frame:  # rejected frames are not timed
            frames.append(current.frame)
            tmp = out.with_suffix(".tmp")
            tmp.write_text(json.dumps({"frames": frames}))
            tmp.replace(out)

    def timed_load(self):
        predictor = load(self)
        predict = predictor.predict

        def timed_predict(*args, **kwargs):
            frame = getattr(current, "frame", None)
            if frame is None:  # warm-up, before any frame
                return predict(*args, **kwargs)
            frame["predict_start"] = time.monotonic()
            prediction = predict(*args, **kwargs)
            frame["predict_end"] = time.monotonic()
            frame["model_ms"] = dict(prediction.timings_ms)
            return prediction

        predictor.predict = timed_predict
        return predictor

    def timed_publish(self, *args):
        start = time.monotonic()
        publish(self, *args)
        current.frame["publish_ms"] = (time.monotonic() - start) * 1e3

    node_module.MonoOccNode._process = timed_process
    node_module.MonoOccNode._load_predictor = timed_load
    NodeOutputs._publish = timed_publish


def main() -> int:
    out = Path(sys.argv.pop(1))
    install(out)
    from monoocc_ros.ros.node import main as node_main

    return node_main()


if __name__ == "__main__":
    sys.exit(main())
