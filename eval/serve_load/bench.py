"""The load generator (SGLang's ``sglang.benchmark.serving``) as this measurement drives it: the
command line of one run, the result line it appends to its output file, and the figures a record
keeps from that line. Running it as a child process is ``processes.run_bench``."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import List, Optional

from sgl_specreason.eval.serve_load.runs import SERVE, Run, Setup

#: the load generator (``sglang.bench_serving`` is its deprecated alias in SGLang 0.5.23)
BENCH_MODULE = "sglang.benchmark.serving"
#: the fields of the load generator's result line a record keeps
BENCH_FIELDS = (
    "completed", "duration", "request_throughput", "output_throughput", "input_throughput",
    "total_input_tokens", "total_output_tokens", "mean_ttft_ms", "median_ttft_ms", "p99_ttft_ms",
    "mean_e2e_latency_ms", "median_e2e_latency_ms", "p90_e2e_latency_ms", "p99_e2e_latency_ms",
    "median_itl_ms", "concurrency", "max_concurrent_requests",
)


def bench_command(run: Run, url: str, setup: Setup, tokenizer: str, dataset: Path, output: Path,
                  model_name: Optional[str] = None, python: str = sys.executable) -> List[str]:
    """The load generator's command line for ``run`` against ``url``. ``tokenizer`` is the local
    model folder (it is also ``--model``, so that no hub is asked); ``model_name`` is what the
    requests name (serve's served model name; the base runtime's is its model path)."""
    cmd = [python, "-m", BENCH_MODULE, "--backend", "sglang-oai-chat", "--base-url", url,
           "--dataset-name", "random", "--dataset-path", str(dataset),
           "--random-input-len", str(run.input_len), "--random-output-len", str(run.output_len),
           "--random-range-ratio", f"{setup.range_ratio:g}", "--num-prompts", str(run.num_prompts),
           "--max-concurrency", str(run.concurrency), "--request-rate", "inf",
           "--seed", str(setup.seed), "--model", tokenizer, "--tokenizer", tokenizer,
           "--warmup-requests", "0", "--ready-check-timeout-sec", "30",
           "--output-file", str(output), "--output-details", "--disable-tqdm"]
    if model_name:
        cmd += ["--served-model-name", model_name]
    if run.target == SERVE:  # serve refuses ignore_eos: a SpecReason run ends where its reasoning does
        cmd += ["--disable-ignore-eos"]
    return cmd


def read_bench(path: Path) -> Optional[dict]:
    """The last result line the load generator appended to ``path`` (None: none)."""
    last = None
    if not Path(path).exists():
        return None
    for line in Path(path).read_text(encoding="utf-8", errors="replace").splitlines():
        try:
            value = json.loads(line)
        except ValueError:
            continue
        if isinstance(value, dict) and "completed" in value:
            last = value
    return last


def bench_figures(result: dict, num_prompts: int) -> dict:
    """The figures a record keeps from a result line, its failures, and the distinct errors.

    >>> out = bench_figures({"completed": 3, "median_ttft_ms": 12.5, "errors": ["", "boom", "boom"]}, 4)
    >>> out["failed"], out["median_ttft_ms"], out["error_messages"]
    (1, 12.5, ['boom'])
    """
    figures = {name: result.get(name) for name in BENCH_FIELDS}
    figures["failed"] = num_prompts - int(result.get("completed") or 0)
    messages = []
    for message in result.get("errors") or ():
        message = (message or "").strip()
        if message and message[-500:] not in messages:
            messages.append(message[-500:])
    figures["error_messages"] = messages[:5]
    return figures
