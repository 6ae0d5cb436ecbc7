"""``sgl-specreason``: run SpecReason (or a baseline) on two SGLang runtimes.

    sgl-specreason demo                      # two local CPU runtimes, a few GSM8K problems
    sgl-specreason solve "What is 17 * 23?"  # one question
    sgl-specreason batch --input problems.jsonl --base-url http://gpu1:30000 --draft-url ... (resumable)
    sgl-specreason models                    # the offline models, prepared on first use
    sgl-specreason eval --dataset gsm8k ...  # SpecReason against its baselines (python -m eval)
    sgl-specreason judge-bench ...           # how well each judge tells good steps from bad ones
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import signal
import sys
import time
from pathlib import Path
from typing import List, Optional

import jsonlines

from sgl_specreason import data, models
from sgl_specreason.config import SCORE_METHODS, SpecReasonConfig
from sgl_specreason.batch import ProgressMonitor, plan
from sgl_specreason.errors import InputError, SpecReasonError
from sgl_specreason.problems import ProblemSet, make_problem, read_jsonl
from sgl_specreason.runtime import stop_all
from sgl_specreason.runner import (
    MODES,
    Monitor,
    RuntimeOptions,
    open_runtimes,
    print_summary,
    roles_for,
    run_problems,
    stopping,
    summary,
)
from sgl_specreason.trace import BASE, DRAFT

_CONFIG_HELP = {
    "threshold": "accept a drafted step when its score >= this (0..10; 0 keeps every draft, 10 none)",
    "score_method": "greedy: the judge's digit; average: expected digit over its top-k (the paper's "
                    "question); likelihood, likelihood-min, likelihood-numbers: 10 + the base "
                    "model's log-prob of the step's tokens (mean, worst 3-token window, worst "
                    "number token)",
    "token_budget": "stop after this many kept output tokens",
    "step_max_tokens": "new tokens per reasoning step at most",
    "answer_max_tokens": "new tokens for the answer when reasoning stopped without one",
    "num_drafts": "drafts per step, forked from one cached prefix, judged together; the best is kept",
    "pipeline": "draft the next step while this one is judged (aborted if it is rejected)",
    "race_base_step": "start the base model's own step together with the judgement; abort the loser",
    "first_n_base_steps": "the base model writes the first N steps",
    "judge_top_logprobs": "top log-probabilities of the judge token (1..20)",
    "seed": "sampling seed of the local runtimes",
    "request_timeout": "seconds a runtime request may take",
    "request_retries": "times a refused, dropped or 5xx request is sent again (with backoff)",
}


def positive_int(text: str) -> int:
    """argparse type: an integer of at least 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _add_config_flags(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("SpecReason settings")
    defaults = SpecReasonConfig()
    for f in dataclasses.fields(SpecReasonConfig):
        default = getattr(defaults, f.name)
        flag = "--" + f.name.replace("_", "-")
        if isinstance(default, bool):
            group.add_argument(flag, action=argparse.BooleanOptionalAction, default=None,
                               help=f"{_CONFIG_HELP[f.name]} (default {'on' if default else 'off'})")
            continue
        kind = {int: int, float: float, str: str}.get(type(default), int)
        if f.name in ("threshold", "draft_temperature", "base_temperature", "top_p", "request_timeout"):
            kind = float
        extra = {"choices": SCORE_METHODS} if f.name == "score_method" else {}
        group.add_argument(flag, type=kind, default=None,
                           help=f"{_CONFIG_HELP.get(f.name, f.name.replace('_', ' '))} (default {default})",
                           **extra)


def _add_runtime_flags(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("runtimes (give URLs, or models to serve locally)")
    d = RuntimeOptions()
    for role in (DRAFT, BASE):
        group.add_argument(f"--{role}-url", help=f"URL of a running SGLang server for the {role} model")
        group.add_argument(f"--{role}-model", default=getattr(d, f"{role}_model"),
                           help=f"offline model name ({', '.join(models.MODELS)}) or a local Hugging "
                                f"Face folder (default {getattr(d, f'{role}_model')})")
        group.add_argument(f"--{role}-dtype", default=getattr(d, f"{role}_dtype"),
                           help=f"dtype of the local {role} server (default {getattr(d, f'{role}_dtype')})")
        group.add_argument(f"--{role}-template", help="prompt template, if not told by the model name")
        group.add_argument(f"--{role}-port", type=int, help="port of the local server (default: a free one)")
    group.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    group.add_argument("--threads", type=int, help="OMP threads per local CPU server (default: 2 "
                                                   "when one runtime works at a time, 1 with "
                                                   "--parallel > 1, --pipeline or --race-base-step)")
    group.add_argument("--max-total-tokens", type=int, default=d.max_total_tokens,
                       help="KV pool size of each local server, in tokens")
    group.add_argument("--log-dir", type=Path, default=d.log_dir, help="server logs go here")
    group.add_argument("--api-key", help="API key of the given servers")


def _add_run_flags(parser: argparse.ArgumentParser, result_file: str) -> None:
    parser.add_argument("--mode", choices=MODES, default="specreason",
                        help="specreason, or a baseline: base (base model alone), draft (draft "
                             "alone), base-gen (one long gen on the base runtime); dropin: that one "
                             "gen served by the drop-in SpecReason backend")
    parser.add_argument("--parallel", type=int, default=1, help="problems solved at once (run_batch threads)")
    parser.add_argument("--result-file", "--output", type=Path, default=Path(result_file),
                        help="JSONL results, one line per problem, appended")
    parser.add_argument("--quiet", action="store_true", help="no line per step")
    _add_config_flags(parser)
    _add_runtime_flags(parser)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="sgl-specreason", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser("demo", help="SpecReason on a few GSM8K problems (local CPU runtimes by default)")
    demo.add_argument("--num-questions", type=int, default=2)
    demo.add_argument("--offset", type=int, default=0, help="first GSM8K test problem")
    _add_run_flags(demo, "results/demo.jsonl")
    solve = sub.add_parser("solve", help="solve one question")
    solve.add_argument("question")
    _add_run_flags(solve, "results/solve.jsonl")
    run = sub.add_parser("batch", aliases=["run"],
                         help="solve the problems of a JSONL file (question, answer, id, choices); "
                              "resumable: a rerun solves only what the results file lacks")
    run.add_argument("--data-path", "--input", type=Path, required=True, help="problems, JSONL")
    run.add_argument("--num-questions", type=int, help="only the first N problems")
    run.add_argument("--on-bad-line", choices=("skip", "reject"), default="skip",
                     help="a bad input line (not JSON, no question, empty, duplicate id) is "
                          "reported and skipped (exit code 1), or stops the batch before it starts")
    _add_run_flags(run, "results/run.jsonl")
    mdl = sub.add_parser("models", help="list the offline models; --prepare NAME installs and converts one")
    mdl.add_argument("--prepare", action="append", default=[], metavar="NAME")
    return parser


# The judge for the default local CPU pair, chosen by measurement: on 120 GSM8K step pairs
# (eval/reports/cpu-2026-11-24/judges) the paper's question gave Qwen2.5-Coder-1.5B an AUROC of
# 0.50 (greedy: 9 for nearly every step) while the base model's log-prob of the step's worst
# number token gave 0.95; at >= 6 (every number at least 1.8 % likely) it kept 94 % of correct
# steps and 9 % of corrupted ones, and costs a smaller prefill than the paper's question.
# Given URLs or other models keep the paper's judge (greedy >= 7) unless told otherwise.
LOCAL_PAIR_DEFAULTS = {"score_method": "likelihood-numbers", "threshold": 6.0}


def uses_local_pair(args) -> bool:
    """True when the command serves the default draft and base models locally."""
    d = RuntimeOptions()
    return (not getattr(args, "draft_url", None) and not getattr(args, "base_url", None)
            and getattr(args, "draft_model", d.draft_model) == d.draft_model
            and getattr(args, "base_model", d.base_model) == d.base_model)


def config_from_args(args) -> SpecReasonConfig:
    given = {f.name: getattr(args, f.name) for f in dataclasses.fields(SpecReasonConfig)
             if getattr(args, f.name, None) is not None}
    if uses_local_pair(args):
        given = {**LOCAL_PAIR_DEFAULTS, **given}
    return SpecReasonConfig(**given)


def runtime_options(args) -> RuntimeOptions:
    # Two runtimes busy at once share the two cores: one thread each (DESIGN §3).
    both_busy = args.parallel > 1 or getattr(args, "pipeline", None) or getattr(args, "race_base_step", None)
    threads = args.threads or (1 if both_busy else 2)
    return RuntimeOptions(
        draft_url=args.draft_url, base_url=args.base_url, draft_model=args.draft_model,
        base_model=args.base_model, draft_template=args.draft_template,
        base_template=args.base_template, draft_dtype=args.draft_dtype, base_dtype=args.base_dtype,
        device=args.device, threads=threads, max_total_tokens=args.max_total_tokens,
        draft_port=args.draft_port, base_port=args.base_port, log_dir=args.log_dir,
        api_key=args.api_key,
    )


def _problems(args) -> tuple[ProblemSet, str]:
    if args.command == "demo":
        return ProblemSet(data.gsm8k(args.num_questions, args.offset)), "gsm8k"
    if args.command == "solve":
        return ProblemSet([make_problem(args.question, id="question")]), "question"
    problems = read_jsonl(args.data_path)
    if args.num_questions is not None:
        problems.problems = problems.problems[: args.num_questions]
    return problems, args.data_path.stem


BATCH_COMMANDS = ("batch", "run")


def _run(args) -> int:
    cfg = config_from_args(args)
    if args.parallel < 1:
        raise SpecReasonError(f"--parallel must be at least 1, got {args.parallel}")
    problems, task = _problems(args)
    batch = args.command in BATCH_COMMANDS
    if batch:  # resumable: only what the results file does not hold yet
        todo, bad, done_before = plan(problems, args.result_file, args.mode)
    else:
        todo, bad, done_before = problems.problems, problems.bad, 0
    for item in bad:
        print(f"bad input: {item.error}", file=sys.stderr)
    if bad and batch and args.on_bad_line == "reject":
        raise InputError(f"{len(bad)} bad input line(s) in {args.data_path}, listed above; fix "
                         f"them, or pass --on-bad-line skip to solve the others")
    if batch:
        print(f"{len(todo)} problems to solve, {done_before} done before in {args.result_file}"
              + (f", {len(bad)} bad input lines skipped" if bad else ""))
        if not todo:
            return 1 if bad else 0
    if args.mode == "specreason":
        print(f"judge: {cfg.score_method} score >= {cfg.threshold:g} keeps a drafted step")
    roles = roles_for(args.mode)
    args.result_file.parent.mkdir(parents=True, exist_ok=True)
    with open_runtimes(runtime_options(args), cfg, roles) as runtimes, \
            jsonlines.open(args.result_file, mode="a", flush=True) as writer:
        for role in runtimes.values():
            print(f"{role.name}: {role.backend.model_path} at {role.backend.base_url} "
                  f"(template {role.template.name})")
        if batch:
            monitor = ProgressMonitor(writer, total=len(todo), show_steps=not args.quiet)
        else:
            monitor = Monitor(writer, show_steps=not args.quiet)
        started = time.perf_counter()
        try:
            results = run_problems(todo, cfg, runtimes, args.mode, monitor, args.parallel)
        finally:
            monitor.close()
        line = summary(results, args.mode, task, time.perf_counter() - started, bad)
        line["other"]["config"] = cfg.to_dict()
        line["other"]["done_before"] = done_before
        writer.write({"summary": line})
    print(f"\nSummary ({args.result_file}):")
    print_summary(line)
    return 1 if line["other"]["errors"] else 0


def _models(args) -> int:
    for name in args.prepare:
        print(f"{name}: {models.prepare(name, log=print)}")
    for model in models.MODELS.values():
        folder = models.cache_dir() / "models" / model.name / "hf"
        state = "ready" if (folder / "config.json").exists() else "prepared on first use"
        print(f"{model.describe()} - {state}")
    return 0


def main(argv: Optional[List[str]] = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["eval"]:
        from eval.run_eval import main as eval_main

        return eval_main(argv[1:])
    if argv[:1] == ["judge-bench"]:
        from eval.judge_bench import main as bench_main

        return bench_main(argv[1:])
    args = build_parser().parse_args(argv)
    return guarded(lambda: _models(args) if args.command == "models" else _run(args),
                   "interrupted; local runtimes stopped")


def guarded(job, interrupted: str) -> int:
    """Run a command: our errors as one line (exit 2); Ctrl-C and SIGTERM stop the local servers
    and end the process at once (exit 130 / 143).

    Ending at once matters with ``--parallel``: SGLang's ``run_batch`` would otherwise wait for
    every problem in flight, minutes each on a CPU. Nothing finished is lost, since each result
    is flushed as it is written; a rerun of a batch or an evaluation resumes from there."""
    def stop_now(signum, _frame):
        stopping.set()  # problems failing as their servers go away are not recorded as failures
        print(interrupted, file=sys.stderr, flush=True)
        stop_all()
        sys.stdout.flush()
        os._exit(130 if signum == signal.SIGINT else 143)

    previous = {sig: signal.signal(sig, stop_now) for sig in (signal.SIGINT, signal.SIGTERM)}
    if hasattr(sys.stdout, "reconfigure"):
        sys.stdout.reconfigure(line_buffering=True)  # progress shows up in logs as it happens
    try:
        return job()
    except SpecReasonError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


if __name__ == "__main__":
    sys.exit(main())
