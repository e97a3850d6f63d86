"""``monoocc bench`` (parser: :mod:`monoocc_ros.cli.bench`): run every ``bench/bench_*.py`` in a fresh subprocess, collect their JSON.

Each script prints one JSON object on stdout (on one line or indented; logs may come before
it). A fresh interpreter per script keeps one benchmark's allocator state, compiled kernels and
threads from skewing the next. Scripts that accept ``--quick`` get it with ``--quick``; others
run at their default size and say so.

The result is one JSON document (scripts by name, with exit status and wall time) and a
Markdown summary table.

Example:
    $ monoocc bench --quick --only inference --json-out bench.json
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from monoocc_ros.fileio import write_text_atomic

__all__ = ["BenchResult", "find_scripts", "run_script", "run_benches", "markdown_table", "run_command"]

BENCH_DIR = Path(__file__).resolve().parent.parent / "bench"


@dataclass(frozen=True)
class BenchResult:
    """One script's run: ``result`` is its JSON object, or None with ``error`` saying why."""

    name: str
    script: str
    returncode: int
    wall_s: float
    quick: bool | None
    result: dict | None
    error: str | None
    stderr_tail: str = ""

    def to_dict(self) -> dict:
        return {
            "script": self.script,
            "returncode": self.returncode,
            "wall_s": round(self.wall_s, 1),
            "quick": self.quick,
            "result": self.result,
            "error": self.error,
            "stderr_tail": self.stderr_tail,
        }


def find_scripts(bench_dir: Path = BENCH_DIR, only: list[str] | None = None) -> dict[str, Path]:
    """``bench_<name>.py`` files by name, filtered by ``only`` (ValueError lists the known names)."""
    bench_dir = Path(bench_dir)
    if not bench_dir.is_dir():
        raise FileNotFoundError(f"benchmark folder not found: {bench_dir}")
    scripts = {p.stem.removeprefix("bench_"): p for p in sorted(bench_dir.glob("bench_*.py"))}
    if only:
        unknown = sorted(set(only) - set(scripts))
        if unknown:
            raise ValueError(f"unknown benchmark(s) {unknown}; known: {sorted(scripts)}")
        scripts = {name: scripts[name] for name in only}
    return scripts


def _supports_quick(script: Path) -> bool:
    return '"--quick"' in script.read_text(encoding="utf-8")


def _last_json_object(stdout: str) -> dict | None:
    """The script's JSON: the last top-level JSON object in stdout, on one line or indented.

    Logs may come before it. Candidates start at a line whose first non-blank character is
    ``{``; the scan goes forward and skips past each document it decodes, so the inner objects of
    an indented document are never mistaken for the result.
    """
    decoder = json.JSONDecoder()
    found, cursor, pos = None, 0, 0
    for line in stdout.splitlines(keepends=True):
        start, pos = pos, pos + len(line)
        brace = start + len(line) - len(line.lstrip())
        if start < cursor or not line.lstrip().startswith("{"):
            continue
        try:
            value, end = decoder.raw_decode(stdout, brace)
        except json.JSONDecodeError:
            continue
        if isinstance(value, dict):
            found, cursor = value, end
    return found


def run_script(name: str, script: Path, *, quick: bool, extra_args: list[str] = (), timeout_s: float | None = None) -> BenchResult:
    """Run one script in a fresh interpreter (this one's ``sys.executable``) and parse its JSON."""
    script = Path(script)
    quick_flag = quick and _supports_quick(script)
    cmd = [sys.executable, str(script), *(["--quick"] if quick_flag else []), *extra_args]
    env = dict(os.environ)
    repo = str(script.resolve().parent.parent)
    env["PYTHONPATH"] = repo + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    start = time.perf_counter()
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s, env=env)
    except subprocess.TimeoutExpired:
        return BenchResult(name, str(script), -1, time.perf_counter() - start, quick_flag if quick else None, None,
                           f"timed out after {timeout_s} s")
    wall = time.perf_counter() - start
    result = _last_json_object(proc.stdout)
    error = None
    tail = proc.stderr.strip().splitlines()[-20:]
    if proc.returncode != 0:
        # the last stderr line of a traceback is the exception itself
        error = f"exit status {proc.returncode}: " + (tail[-1] if tail else "no output on stderr")
    elif result is None:
        error = "printed no JSON object on stdout"
    return BenchResult(name, str(script), proc.returncode, wall, quick_flag if quick else None, result, error,
                       "\n".join(tail))


def run_benches(only: list[str] | None = None, *, quick: bool = False, bench_dir: Path = BENCH_DIR,
                timeout_s: float | None = None, progress: bool = True) -> dict:
    """Run the selected scripts one after another; returns the combined JSON document."""
    from tqdm import tqdm

    scripts = find_scripts(bench_dir, only)
    results = {}
    bar = tqdm(scripts.items(), desc="bench", unit="script", disable=not progress, file=sys.stderr)
    for name, script in bar:
        bar.set_postfix_str(name)
        results[name] = run_script(name, script, quick=quick, timeout_s=timeout_s).to_dict()
    return {
        "schema": "monoocc_ros/bench/1",
        "quick": quick,
        "python": sys.version.split()[0],
        "started_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "benches": results,
    }


def _fmt(value) -> str:
    if isinstance(value, float):
        return f"{value:.3g}" if abs(value) < 1000 else f"{value:.0f}"
    return str(value)


def _flatten(prefix: str, value, rows: list[tuple[str, str]], depth: int = 0) -> None:
    if isinstance(value, dict) and depth < 2:
        for k, v in value.items():
            _flatten(f"{prefix}.{k}" if prefix else k, v, rows, depth + 1)
    elif isinstance(value, (int, float, str, bool)) and not isinstance(value, bool):
        rows.append((prefix, _fmt(value)))


def _inference_rows(result: dict) -> list[str]:
    lines = [
        f"Device: {result.get('device')}, image {result.get('image_hw')}, {result.get('repeats')} repeats",
        "",
        "| config | run | p50 ms | p90 ms | backbone+neck | proposals | cross-attn | self-attn | ICA | head | peak MB | agreement | TFLOP/s |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for cfg in result.get("configs", []):
        for key, run in cfg.get("runs", {}).items():
            if "total_ms" not in run:
                lines.append(f"| {cfg['config']} | {key} | {run.get('skipped', '')} |||||||||||")
                continue
            st = run.get("stages_ms", {})
            stage = [_fmt(st[s]["p50"]) if s in st else "" for s in
                     ("backbone_neck", "proposals", "cross_attention", "self_attention", "ica", "head")]
            if not any(stage) and "onnxruntime" in st:
                stage = ["(one graph)"] + [""] * 5
            peak = run.get("peak_memory_mb", run.get("peak_rss_mb", ""))
            lines.append(
                f"| {cfg['config']} | {key} | {_fmt(run['total_ms']['p50'])} | {_fmt(run['total_ms']['p90'])} | "
                + " | ".join(stage)
                + f" | {_fmt(peak)} | {_fmt(run.get('label_agreement', 1.0))} | {_fmt(run.get('achieved_tflops', ''))} |"
            )
    lines += ["", "| config | comparison | baseline | variant | speed-up (p50) |", "|---|---|---|---|---|"]
    for cfg in result.get("configs", []):
        for key, c in cfg.get("comparisons", {}).items():
            if "skipped" in c:
                lines.append(f"| {cfg['config']} | {key} | {c['skipped']} |||")
                continue
            lines.append(f"| {cfg['config']} | {key} | {c['baseline']} | {c['variant']} | {_fmt(c['speedup_p50'])} |")
    return lines


def markdown_table(document: dict) -> str:
    """Markdown summary: a status table of all scripts, then one section per script."""
    lines = ["| benchmark | status | wall s | quick |", "|---|---|---|---|"]
    benches = document.get("benches", {})
    for name, b in benches.items():
        status = "ok" if b["error"] is None else f"FAILED: {b['error'][:120]}"
        lines.append(f"| {name} | {status} | {_fmt(b['wall_s'])} | {b['quick']} |")
    for name, b in benches.items():
        if b["result"] is None:
            continue
        lines += ["", f"### {name}", ""]
        if name == "inference":
            lines += _inference_rows(b["result"])
            continue
        rows: list[tuple[str, str]] = []
        _flatten("", b["result"], rows)
        lines += ["| metric | value |", "|---|---|"] + [f"| {k} | {v} |" for k, v in rows]
    return "\n".join(lines) + "\n"


def run_command(args) -> int:
    """The handler of ``monoocc bench`` (parser: :mod:`monoocc_ros.cli.bench`); 1 when a script failed."""
    try:
        document = run_benches(args.only, quick=args.quick, bench_dir=args.bench_dir, timeout_s=args.timeout_s)
    except (FileNotFoundError, ValueError) as exc:
        print(f"monoocc bench: {exc}", file=sys.stderr)
        return 2
    table = markdown_table(document)
    if args.json_out is not None:
        write_text_atomic(args.json_out, json.dumps(document, indent=1) + "\n")
    if args.markdown_out is not None:
        write_text_atomic(args.markdown_out, table)
    print(table)
    if args.json_out is None:
        print(json.dumps(document))
    failed = [name for name, b in document["benches"].items() if b["error"] is not None]
    return 1 if failed else 0
