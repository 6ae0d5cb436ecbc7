"""OpenAI Batch files on real runtimes: the same file of chat lines answered offline by
``sgl-specreason batch`` and by ``serve``'s ``/v1/batches`` through the unchanged openai client,
with ``serve`` SIGKILLed half-way and restarted on the same ``--data-dir``.

    python -m eval.openai_batches --lines 200 --max-tokens 64 --out-dir eval/reports/openai-compat

The lines are the chat requests of ``eval/general_requests.jsonl``, cycled to ``--lines``, each
with its own ``custom_id``. Two SmolLM2-135M runtimes are started on this machine and shared by
both ways. Writes ``batches.md`` (the checks and the figures) and ``batches.json`` to
``--out-dir``; the output files themselves stay in ``--work-dir``.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Dict, List, Optional

from sgl_specreason.config import SpecReasonConfig
from sgl_specreason.eval.datasets import general_requests
from sgl_specreason.eval.openai_compat import wait_healthy
from sgl_specreason.runner import RuntimeOptions, open_runtimes
from sgl_specreason.runtime import free_port

MODEL = "smollm2-135m"
OUTPUT_KEYS = {"id", "custom_id", "response", "error"}
RESPONSE_KEYS = {"status_code", "request_id", "body"}


def write_input(path: Path, lines: int, max_tokens: int) -> List[str]:
    """``lines`` chat lines in OpenAI's Batch format; their custom ids."""
    requests = general_requests()
    ids = []
    with path.open("w") as out:
        for i in range(lines):
            request = requests[i % len(requests)]
            ids.append(f"{request['id']}-{i:03d}")
            out.write(json.dumps({"custom_id": ids[-1], "method": "POST", "url": "/v1/chat/completions",
                                  "body": {"model": "specreason", "messages": request["messages"],
                                           "max_tokens": max_tokens}}) + "\n")
    return ids


def check(lines: List[dict], ids: List[str]) -> dict:
    """What an output file holds against the input's custom ids."""
    seen: Dict[str, int] = {}
    for line in lines:
        seen[line.get("custom_id")] = seen.get(line.get("custom_id"), 0) + 1
    shapes = {(tuple(sorted(line)), tuple(sorted(line.get("response") or {}))) for line in lines}
    ok = [line for line in lines if (line.get("response") or {}).get("status_code") == 200]
    return {"lines": len(lines), "answered_200": len(ok),
            "matched": sum(1 for i in ids if i in seen), "lost": sum(1 for i in ids if i not in seen),
            "duplicated": sum(n - 1 for n in seen.values() if n > 1),
            "unknown": sum(1 for i in seen if i not in set(ids)),
            "one_shape": len(shapes) == 1 and all(set(k) == OUTPUT_KEYS for k, _ in shapes)
            and all(set(r) == RESPONSE_KEYS for _, r in shapes)}


def read_lines(path: Path) -> List[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def offline(input_path: Path, out: Path, urls: Dict[str, str], parallel: int) -> dict:
    started = time.perf_counter()
    code = subprocess.call([sys.executable, "-m", "sgl_specreason.cli", "batch", "--input", str(input_path),
                            "--output", str(out), "--draft-url", urls["draft"], "--base-url", urls["base"],
                            "--parallel", str(parallel)])
    return {"exit_code": code, "seconds": round(time.perf_counter() - started, 1)}


def start_serve(port: int, urls: Dict[str, str], data_dir: Path, log: Path, slots: int) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "sgl_specreason.cli", "serve", "--port", str(port), "--draft-url", urls["draft"],
         "--base-url", urls["base"], "--data-dir", str(data_dir), "--max-in-flight", str(slots),
         "--batch-slots", str(slots)],
        stdout=log.open("ab"), stderr=subprocess.STDOUT, start_new_session=True)


def served(input_path: Path, work: Path, urls: Dict[str, str], slots: int, kill_at: float) -> dict:
    """The file through /v1/batches; serve SIGKILLed once ``kill_at`` of the lines are done, then
    restarted on the same data dir."""
    import openai

    port, data_dir, log = free_port(), work / "serve-data", work / "serve.log"
    url = f"http://127.0.0.1:{port}"
    started = time.perf_counter()
    process = start_serve(port, urls, data_dir, log, slots)
    wait_healthy(url, process)
    client = openai.OpenAI(base_url=url + "/v1", api_key="none", max_retries=2)
    with input_path.open("rb") as handle:
        upload = client.files.create(file=handle, purpose="batch")
    batch = client.batches.create(input_file_id=upload.id, endpoint="/v1/chat/completions",
                                  completion_window="24h")
    total = sum(1 for _ in input_path.open())
    while True:
        state = client.batches.retrieve(batch.id)
        done = state.request_counts.completed + state.request_counts.failed if state.request_counts else 0
        if done >= kill_at * total or state.status in ("completed", "failed", "cancelled", "expired"):
            break
        time.sleep(2)
    killed_at = done
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    process = start_serve(port, urls, data_dir, log, slots)
    try:
        wait_healthy(url, process)
        while True:
            state = client.batches.retrieve(batch.id)
            if state.status in ("completed", "failed", "cancelled", "expired"):
                break
            time.sleep(2)
        content = client.files.content(state.output_file_id).text if state.output_file_id else ""
        (work / "served.jsonl").write_text(content)
        return {"status": state.status, "killed_after": killed_at, "seconds": round(time.perf_counter() - started, 1),
                "request_counts": state.request_counts.model_dump() if state.request_counts else None}
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(60)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)


def report(figures: dict, command: str) -> str:
    rows = ["| way | lines | answered (200) | custom ids matched | lost | duplicated | one shape | seconds |",
            "|---|---:|---:|---:|---:|---:|---|---:|"]
    for way in ("batch", "v1_batches"):
        c, run = figures[way]["check"], figures[way]["run"]
        rows.append(f"| {way} | {c['lines']} | {c['answered_200']} | {c['matched']} | {c['lost']} | "
                    f"{c['duplicated']} | {'yes' if c['one_shape'] else 'NO'} | {run['seconds']:g} |")
    same = figures["same_shape_both_ways"]
    v1 = figures["v1_batches"]["run"]
    return "\n".join([
        "# OpenAI Batch files on real runtimes", "",
        f"{figures['lines']} chat lines (`max_tokens` {figures['max_tokens']}) from `eval/general_requests.jsonl`, "
        "answered by two SmolLM2-135M runtimes on this CPU: offline by `sgl-specreason batch`, and by "
        "`serve`'s `/v1/batches` through the unchanged openai client, with `serve` SIGKILLed after "
        f"{v1['killed_after']} lines were done and restarted on the same `--data-dir` "
        f"(final status `{v1['status']}`).", "", "```", command, "```", "", *rows, "",
        f"- Output lines of the two ways have the same keys: {'yes' if same else 'NO'}.", ""]) + "\n"


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m eval.openai_batches", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--lines", type=int, default=200)
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--parallel", type=int, default=8, help="batch --parallel and serve's run slots")
    parser.add_argument("--kill-at", type=float, default=0.5, help="share of lines done when serve is killed")
    parser.add_argument("--work-dir", type=Path, default=Path("results/openai-batches"))
    parser.add_argument("--out-dir", type=Path, default=Path("eval/reports/openai-compat"))
    args = parser.parse_args(argv)
    args.work_dir.mkdir(parents=True, exist_ok=True)
    for stale in ("offline.jsonl", "served.jsonl", "serve.log"):
        (args.work_dir / stale).unlink(missing_ok=True)
    input_path = args.work_dir / "input.jsonl"
    ids = write_input(input_path, args.lines, args.max_tokens)
    opts = RuntimeOptions(draft_model=MODEL, base_model=MODEL, max_total_tokens=8192, threads=1,
                          log_dir=args.work_dir / "logs")
    with open_runtimes(opts, SpecReasonConfig()) as roles:
        urls = {name: role.backend.base_url for name, role in roles.items()}
        figures = {"lines": args.lines, "max_tokens": args.max_tokens}
        run = offline(input_path, args.work_dir / "offline.jsonl", urls, args.parallel)
        figures["batch"] = {"run": run, "check": check(read_lines(args.work_dir / "offline.jsonl"), ids)}
        run = served(input_path, args.work_dir, urls, args.parallel, args.kill_at)
        figures["v1_batches"] = {"run": run, "check": check(read_lines(args.work_dir / "served.jsonl"), ids)}
    shapes = [{tuple(sorted(line)) for line in read_lines(args.work_dir / name)} for name in ("offline.jsonl", "served.jsonl")]
    figures["same_shape_both_ways"] = shapes[0] == shapes[1]
    command = (f"python -m eval.openai_batches --lines {args.lines} --max-tokens {args.max_tokens} "
               f"--parallel {args.parallel} --out-dir {args.out_dir}")
    args.out_dir.mkdir(parents=True, exist_ok=True)
    (args.out_dir / "batches.json").write_text(json.dumps(figures, indent=1) + "\n")
    text = report(figures, command)
    (args.out_dir / "batches.md").write_text(text)
    print(text)
    good = all(figures[w]["check"]["lost"] == 0 and figures[w]["check"]["duplicated"] == 0
               and figures[w]["check"]["lines"] == args.lines for w in ("batch", "v1_batches"))
    return 0 if good else 1


if __name__ == "__main__":
    sys.exit(main())
