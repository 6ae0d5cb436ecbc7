"""``sgl-specreason``: run SpecReason (or a baseline) on two SGLang runtimes.

    sgl-specreason demo                      # two local CPU runtimes, a few GSM8K problems
    sgl-specreason solve "What is 17 * 23?"  # one question
    sgl-specreason batch --input problems.jsonl --base-url http://gpu1:30000 --draft-url ... (resumable)
    sgl-specreason models                    # the offline models, prepared on first use
    sgl-specreason serve --base-url ... --draft-url ...  # an OpenAI-compatible endpoint (/v1)
    sgl-specreason eval --dataset gsm8k ...  # SpecReason against its baselines (python -m eval)
    sgl-specreason judge-bench ...           # how well each judge tells good steps from bad ones
"""

from __future__ import annotations

import argparse
import sys
import time
from importlib.metadata import EntryPoint, entry_points
from pathlib import Path
from typing import Dict, List, Optional

from sgl_specreason import data, models
from sgl_specreason.batch import ProgressMonitor, plan
from sgl_specreason.errors import InputError, SpecReasonError
from sgl_specreason.flags import (
    add_config_flags,
    add_runtime_flags,
    config_from_args,
    guarded,
    runtime_options,
)
from sgl_specreason.framing import PLAIN
from sgl_specreason.modes import MODES, roles_for
from sgl_specreason.openai_batch import answer_file, is_request_file, read_requests
from sgl_specreason.problems import ProblemSet, make_problem, read_jsonl
from sgl_specreason.runner import (
    Monitor,
    dry_run,
    print_summary,
    run_problems,
    session,
    summary,
)
from sgl_specreason.serve.answering import check_body
from sgl_specreason.serve.command import add_serve_flags, serve
from sgl_specreason.store import ResultStore

#: entry-point group of the commands other packages add (``eval``, ``judge-bench``): each names a
#: ``main(argv) -> int``, and ``sgl-specreason NAME ...`` hands it the rest of the command line
COMMANDS_GROUP = "sgl_specreason.commands"


def registered_commands() -> Dict[str, EntryPoint]:
    """The commands registered under ``COMMANDS_GROUP`` by installed packages, by name."""
    return {ep.name: ep for ep in entry_points(group=COMMANDS_GROUP)}

def _add_run_flags(parser: argparse.ArgumentParser, result_file: str) -> None:
    parser.add_argument("--mode", choices=list(MODES), default="specreason",
                        help="; ".join(f"{name}: {mode.help}" for name, mode in MODES.items()))
    parser.add_argument("--parallel", type=int, default=1, help="problems solved at once (run_batch threads)")
    parser.add_argument("--result-file", "--output", type=Path, default=Path(result_file),
                        help="JSONL results, one line per problem, appended")
    parser.add_argument("--quiet", action="store_true", help="no line per step")
    add_config_flags(parser)
    add_runtime_flags(parser)


def build_parser(plugins: Optional[Dict[str, EntryPoint]] = None) -> argparse.ArgumentParser:
    """The parser of the built-in commands, with a line of help for each of ``plugins``
    (``main`` dispatches those before parsing)."""
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
                         help="solve the problems of a JSONL file, one a line: {id, question} (with "
                              "answer, choices), {id, messages} or {id, prompt}; or answer OpenAI Batch "
                              "lines {custom_id, method, url, body} as serve would; resumable: a rerun "
                              "does only what the results file lacks")
    run.add_argument("--data-path", "--input", type=Path, required=True,
                     help="problems, JSONL: a question line is framed as --framing says (paper by "
                          "default), a messages or prompt line plain (as written) unless --framing is given")
    run.add_argument("--num-questions", type=int, help="only the first N problems")
    run.add_argument("--on-bad-line", choices=("skip", "reject"), default="skip",
                     help="a bad input line (not JSON, none or two of question / messages / prompt, "
                          "empty, duplicate id) is "
                          "reported and skipped (exit code 1), or stops the batch before it starts")
    _add_run_flags(run, "results/run.jsonl")
    mdl = sub.add_parser("models", help="list the offline models; --prepare NAME installs and converts one")
    mdl.add_argument("--prepare", action="append", default=[], metavar="NAME")
    # "resolve": the server's --api-key (its clients') replaces the runtimes' (--runtime-api-key)
    srv = sub.add_parser("serve", conflict_handler="resolve",
                         help="serve SpecReason as an OpenAI-compatible endpoint (/v1/chat/completions, "
                              "/v1/completions)")
    add_config_flags(srv)
    add_runtime_flags(srv)
    add_serve_flags(srv)
    for name, ep in (plugins or {}).items():
        sub.add_parser(name, add_help=False, help=f"see sgl-specreason {name} --help ({ep.value})")
    return parser


def _problems(args) -> tuple[ProblemSet, str]:
    if args.command == "demo":
        return ProblemSet(data.gsm8k(args.num_questions, args.offset)), "gsm8k"
    if args.command == "solve":
        return ProblemSet([make_problem(args.question, id="question")]), "question"
    # a line of messages or a prompt is put as written (plain) unless --framing says otherwise
    problems = read_jsonl(args.data_path, framing=args.framing)
    if args.num_questions is not None:
        problems.problems = problems.problems[: args.num_questions]
    return problems, args.data_path.stem


BATCH_COMMANDS = ("batch", "run")


#: what the demo says when it drafts the first step too (the local default lets the base write it)
DEMO_FIRST_STEP = ("demo: every step is drafted and judged (--first-n-base-steps 0), so that you see "
                   "SpecReason at work. The local default lets the base model write the first step "
                   "(--first-n-base-steps {n}): that kept base-only's accuracy on GSM8K train, and that "
                   "step is often the whole solution, so nothing would be drafted")


def _run(args) -> int:
    cfg = config_from_args(args)
    if args.command == "demo" and args.first_n_base_steps is None and cfg.first_n_base_steps:
        print(DEMO_FIRST_STEP.format(n=cfg.first_n_base_steps))
        cfg = cfg.replace(first_n_base_steps=0)
    if args.parallel < 1:
        raise SpecReasonError(f"--parallel must be at least 1, got {args.parallel}")
    if args.dry_run:
        return dry_run(runtime_options(args, args.parallel), cfg, roles_for(args.mode))
    batch = args.command in BATCH_COMMANDS
    if batch and is_request_file(_read(args.data_path)):
        return _answer_requests(args)
    problems, task = _problems(args)
    store = ResultStore(args.result_file)
    if batch:  # resumable: only what the results file does not hold yet
        todo, bad, done_before = plan(problems, store, args.mode)
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
    with session(runtime_options(args, args.parallel), cfg, args.mode) as runtimes, \
            store.append() as writer:
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


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as e:
        raise InputError(f"cannot read the input file {path}: {e.strerror}") from None


def _answer_requests(args) -> int:
    """``batch`` on OpenAI Batch lines: each body answered as ``serve`` answers it (a chat framed
    as written unless ``--framing`` says otherwise), one OpenAI output line per request."""
    cfg = config_from_args(args, framing=PLAIN)
    store = ResultStore(args.result_file)
    raw = _read(args.data_path)
    if args.on_bad_line == "reject":
        _, bad = read_requests(raw, str(args.data_path), lambda url, body: check_body(url, body, cfg))
        for line in bad:
            print(f"bad input: {line.error}", file=sys.stderr)
        if bad:
            raise InputError(f"{len(bad)} bad input line(s) in {args.data_path}, listed above; fix "
                             f"them, or pass --on-bad-line skip to answer the others")
    with session(runtime_options(args, args.parallel), cfg, args.mode) as runtimes:
        counts = answer_file(raw, str(args.data_path), store, runtimes, cfg, args.mode, args.parallel,
                             args.num_questions, log=lambda text: print(text, file=sys.stderr))
    print(f"{counts['answered']} answered, {counts['failed']} failed, {counts['bad']} bad input lines, "
          f"{counts['done_before']} answered before; output lines in {args.result_file}")
    return 1 if counts["failed"] or counts["bad"] else 0


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
    plugins = registered_commands()
    if argv[:1] and argv[0] in plugins:
        return plugins[argv[0]].load()(argv[1:])
    args = build_parser(plugins).parse_args(argv)
    commands = {"models": _models, "serve": serve}
    return guarded(lambda: commands.get(args.command, _run)(args), "interrupted; local runtimes stopped")


if __name__ == "__main__":
    sys.exit(main())
