"""The `monoocc bench` runner: fresh subprocess per script, JSON collected, failures reported."""

from __future__ import annotations

import argparse
import json
import textwrap

import pytest

from monoocc_ros.bench import find_scripts, markdown_table, run_benches
from monoocc_ros.cli.bench import register


def _write(path, body: str) -> None:
    path.write_text(textwrap.dedent(body))


@pytest.fixture
def bench_dir(tmp_path):
    d = tmp_path / "bench"
    d.mkdir()
    _write(d / "bench_alpha.py", """
        import argparse, json, os
        p = argparse.ArgumentParser()
        p.add_argument("--quick", action="store_true")
        a = p.parse_args()
        print("warming up")
        print(json.dumps({"quick": a.quick, "pid": os.getpid(), "speed": {"fps": 12.5}}))
    """)
    _write(d / "bench_beta.py", """
        import json, os
        print(json.dumps({"pid": os.getpid(), "value": 3}))
    """)
    _write(d / "bench_broken.py", """
        raise SystemExit("no bag given")
    """)
    _write(d / "helper.py", "x = 1\n")
    return d


def test_runs_each_script_in_its_own_process(bench_dir):
    doc = run_benches(["alpha", "beta"], quick=True, bench_dir=bench_dir, progress=False)
    alpha, beta = doc["benches"]["alpha"], doc["benches"]["beta"]
    assert alpha["error"] is None and alpha["result"]["quick"] is True and alpha["quick"] is True
    # beta has no --quick option: it runs at default size and the document says so
    assert beta["error"] is None and beta["result"]["value"] == 3 and beta["quick"] is False
    assert alpha["result"]["pid"] != beta["result"]["pid"]
    json.dumps(doc)  # the document is plain JSON
    table = markdown_table(doc)
    assert "| alpha | ok |" in table and "| speed.fps | 12.5 |" in table


def test_failing_script_is_reported_not_hidden(bench_dir):
    doc = run_benches(None, bench_dir=bench_dir, progress=False)
    assert set(doc["benches"]) == {"alpha", "beta", "broken"}
    broken = doc["benches"]["broken"]
    assert broken["result"] is None and broken["returncode"] != 0
    assert "no bag given" in broken["error"]
    assert "FAILED" in markdown_table(doc)


def test_indented_json_is_parsed(tmp_path):
    """Scripts that print ``json.dumps(..., indent=N)`` (bench_node, bench_model, bench_node_replay)."""
    d = tmp_path / "bench"
    d.mkdir()
    _write(d / "bench_indented.py", """
        import json
        print("{ not json: a log line that starts with a brace")
        print(json.dumps({"first": 1}))
        print(json.dumps({"benchmark": "x", "results": [{"config": "tiny", "ms": 2.5}], "nested": {"a": {"b": 1}}},
                         indent=2))
        print("done")
    """)
    doc = run_benches(None, bench_dir=d, progress=False)
    b = doc["benches"]["indented"]
    assert b["error"] is None, b["error"]
    # the last top-level document, not the first one nor an inner object of the indented one
    assert b["result"]["benchmark"] == "x" and b["result"]["results"] == [{"config": "tiny", "ms": 2.5}]
    assert "FAILED" not in markdown_table(doc)


def test_unknown_name_lists_known_ones(bench_dir):
    with pytest.raises(ValueError, match=r"known: \['alpha', 'beta', 'broken'\]"):
        find_scripts(bench_dir, ["gamma"])


def test_repository_bench_folder_has_the_inference_script():
    assert "inference" in find_scripts()


def test_cli_writes_json_and_markdown(bench_dir, tmp_path, capsys):
    parser = argparse.ArgumentParser()
    register(parser.add_subparsers(dest="command"))
    out_json, out_md = tmp_path / "b.json", tmp_path / "b.md"
    args = parser.parse_args([
        "bench", "--only", "beta", "--bench-dir", str(bench_dir), "--json-out", str(out_json), "--markdown-out", str(out_md),
    ])
    assert args.func(args) == 0
    assert json.loads(out_json.read_text())["benches"]["beta"]["result"]["value"] == 3
    assert "| beta | ok |" in out_md.read_text()
    args = parser.parse_args(["bench", "--bench-dir", str(bench_dir)])
    assert args.func(args) == 1  # the broken script makes the run fail


def test_inference_section_renders_stages_and_comparisons():
    run = {"total_ms": {"p50": 20.0, "p90": 22.0},
           "stages_ms": {"backbone_neck": {"p50": 5.0, "p90": 6.0}, "head": {"p50": 2.5, "p90": 3.0}},
           "peak_memory_mb": 3100.0, "label_agreement": 0.9981}
    result = {"device": "NVIDIA H100", "image_hw": [370, 1226], "repeats": 10, "configs": [{
        "config": "monoocc_s",
        "runs": {"eager_fp32": {**run, "total_ms": {"p50": 40.0, "p90": 41.0}}, "eager_fp16": run,
                 "compiled": {"skipped": "not requested"}},
        "comparisons": {"fp32_vs_fp16": {"baseline": "eager_fp32", "variant": "eager_fp16", "speedup_p50": 2.0},
                        "eager_vs_compiled": {"skipped": "baseline x was not measured"}},
    }]}
    doc = {"benches": {"inference": {"script": "s", "returncode": 0, "wall_s": 1.0, "quick": False,
                                     "result": result, "error": None}}}
    table = markdown_table(doc)
    assert "| monoocc_s | eager_fp16 | 20 | 22 | 5 |" in table
    assert "| 3100 | 0.998 |" in table
    assert "| monoocc_s | fp32_vs_fp16 | eager_fp32 | eager_fp16 | 2 |" in table
    assert "not requested" in table and "baseline x was not measured" in table
