"""``sgl-specreason serve`` under SGLang's own load generator, side by side with the base runtime.

    python -m eval.serve_load                 # the default run: about 10-12 minutes on 2 CPU cores
    python -m eval.serve_load --dry-run       # the commands it would run; starts nothing
    python -m eval.serve_load --report-only   # README.md and the plot again from report.jsonl

What it does:

1. starts ``sgl-specreason serve`` on the local SmolLM2-135M pair (serve starts the two runtimes
   itself, on ports chosen here, so the base runtime's URL is known);
2. for each concurrency level (1, 8, 32), runs ``python -m sglang.benchmark.serving --backend
   sglang-oai-chat`` against serve, then the same against the base runtime directly: the same
   ``random`` prompts (seeded; cut from GSM8K train questions written to a local ShareGPT-format
   file, so nothing is downloaded), the same input and output lengths. Both runtimes' radix
   caches are flushed before each run, so no run reuses another's prompts;
3. samples serve's resident memory (psutil) and its request count (``GET /stats``) through every
   run, and reads serve's own time per request (``GET /stats``: the time from a request's
   arrival to its response's last byte, less the wait for a run slot and the SpecReason run);
4. with ``--beside-batch-lines N``, runs each level through serve once more while an OpenAI batch
   of N chat lines (``eval/general_requests.jsonl``'s messages) runs on serve's ``/v1/batches``
   beside the live requests: serve's own time per live request with batch lines holding run
   slots, and how many lines the batch answered meanwhile;
5. sends a long run (200 short requests) through serve: its memory at the first and the last
   request should be within 10 %;
6. writes ``report.jsonl`` (one line per run, appended as each run ends; a rerun skips the runs
   already there and retries those that failed), ``README.md`` (a table and the commands) and
   ``serve_load.png`` to ``--out`` (default ``eval/reports/serve-load``).

It always stops what it started: serve gets SIGTERM (it stops its runtimes), and whatever of
serve's process tree is still alive after that is killed by PID.

What the load generator sends: one user message, ``max_completion_tokens`` = the output length
(serve's token budget), ``temperature`` 0, streamed; ``ignore_eos`` to the base runtime (it
writes exactly that many tokens); not to serve, which refuses it (``--disable-ignore-eos``: a
SpecReason run ends where its reasoning ends). Its time to first token is serve's time to
its first kept step. Serve's completion tokens are its kept steps plus, when the budget ends the
reasoning without an answer, the closing answer (``--answer-max-tokens`` at most).

Size: the default (levels 1, 8, 32 with 4, 16, 32 requests of 64-128 prompt and 32-64 output
tokens; 200 memory-run requests of 16-32 and 4-8 tokens at 32 at once) is sized for about 10-12
minutes with the SmolLM2-135M pair on 2 CPU cores, startup included. ``--num-prompts``,
``--input-len``, ``--output-len``, ``--memory-requests`` and ``--concurrency`` change it; each run
is bounded by ``--run-timeout``.

One concept per module:

- ``runs``: what is measured (``Setup``, ``Run``), the plan of runs, and resumption (the runs
  still to do, the final record of each);
- ``bench``: the load generator's command line and its result line;
- ``record``: serve's own figures (overhead percentiles, stream errors, memory) and the JSON
  line of one run;
- ``beside``: the OpenAI batch a ``beside-batch`` run submits to serve before its load generator
  starts, and cancels when it ends;
- ``processes``: the child processes (serve and its runtimes, the load generator) and the
  sampler that watches serve;
- ``measurement``: one measurement, run after run, each record appended as it ends;
- ``report``: README.md (the targets checked, the table, the commands) and the plot;
- ``command``: the command line (``main``).
"""

from sgl_specreason.eval.serve_load.bench import BENCH_FIELDS, BENCH_MODULE, bench_command, bench_figures, read_bench
from sgl_specreason.eval.serve_load.command import main, parse_args, shown_commands
from sgl_specreason.eval.serve_load.measurement import measure, write_prompts
from sgl_specreason.eval.serve_load.runs import (
    BASE,
    BESIDE,
    LEVEL,
    MEMORY,
    SERVE,
    Run,
    Setup,
    final_records,
    plan,
    record_key,
    remaining,
)
from sgl_specreason.eval.serve_load.processes import REPO, Ports, Sampler, Serve, get_json, post, run_bench, serve_command
from sgl_specreason.eval.serve_load.record import (
    MEMORY_TOLERANCE,
    make_record,
    memory_check,
    new_overheads,
    percentiles,
    rss_summary,
    stream_errors,
    thin,
)
from sgl_specreason.eval.serve_load.report import OVERHEAD_TARGET_MS, plot, readme, table, verdicts, write_report

__all__ = [
    "BENCH_FIELDS", "BENCH_MODULE", "bench_command", "bench_figures", "read_bench",
    "main", "parse_args", "shown_commands",
    "measure", "write_prompts",
    "BASE", "BESIDE", "LEVEL", "MEMORY", "SERVE", "Run", "Setup", "final_records", "plan", "record_key", "remaining",
    "REPO", "Ports", "Sampler", "Serve", "get_json", "post", "run_bench", "serve_command",
    "MEMORY_TOLERANCE", "make_record", "memory_check", "new_overheads", "percentiles", "rss_summary",
    "stream_errors", "thin",
    "OVERHEAD_TARGET_MS", "plot", "readme", "table", "verdicts", "write_report",
]
