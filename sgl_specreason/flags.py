"""What every command line shares: the SpecReason and runtime flags, how they become a
``SpecReasonConfig`` and ``RuntimeOptions``, and running a command with errors and signals
handled (``guarded``).

``sgl-specreason``, ``python -m eval``, ``eval.judge_bench`` and the scripts build their parsers
from these, so a setting is spelled, defaulted and explained the same way everywhere.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import signal
import sys
from pathlib import Path
from typing import Callable, Optional

from sgl_specreason import models
from sgl_specreason.backend import KEEPALIVE_S, SGLANG_KEEPALIVE_S, client_keepalive
from sgl_specreason.config import SpecReasonConfig
from sgl_specreason.errors import SpecReasonError
from sgl_specreason.framing import FRAMINGS, PLAIN
from sgl_specreason.judges import JUDGES
from sgl_specreason.runner import RuntimeOptions, stopping
from sgl_specreason.runtime import DEVICE_DEFAULTS, LOCAL_KEEPALIVE_S, stop_all
from sgl_specreason.speculation import POLICIES
from sgl_specreason.templates import TEMPLATES
from sgl_specreason.trace import BASE, DRAFT

CONFIG_HELP = {
    "threshold": "accept a drafted step when its score >= this (0..10; 0 keeps every draft; at 10 "
                 "drafts are still written and judged, and only a top score of 10 passes, e.g. "
                 "all drafts agreeing or a step the base model is certain of; the base mode "
                 "writes every step with no draft)",
    "score_method": "; ".join(f"{name}: {judge.help}" for name, judge in JUDGES.items()),
    "token_budget": "stop after this many kept output tokens",
    "step_max_tokens": "new tokens per reasoning step at most",
    "answer_max_tokens": "new tokens for the answer when reasoning stopped without one",
    "num_drafts": "drafts per step, forked from one cached prefix, judged together; the best is kept",
    "pipeline": "draft the next step while this one is judged (aborted if it is rejected)",
    "race_base_step": "start the base model's own step together with the judgement; abort the loser",
    "keep_draft_prefix": "when a draft is rejected, keep its longest start (to a word's end) that the "
                         "judge would accept and let the base model write the step on from there "
                         "(likelihood judges; not with --race-base-step)",
    "first_n_base_steps": "the base model writes the first N steps",
    "speculate": "when to draft and judge a step: always; never (the base model writes every "
                 "step, same program); auto (per step, whichever the costs just measured on the "
                 "runtimes at their current load, and the acceptance so far, say is cheaper: "
                 "draft + judge + rewrite if rejected, or the base model writing it; a few "
                 "declined steps are still speculated to keep those figures current)",
    "judge_top_logprobs": "top log-probabilities of the judge token (1..20)",
    "seed": "sampling seed of the local runtimes",
    "framing": "how the question is put to the models: paper (the paper's math / multiple-choice "
               "instruction, thinking opened; the benchmarks' prompt) or plain (the conversation "
               "as written; a run ends where the model ends it)",
    "chat_template_kwargs": "arguments of the models' own chat templates, as a JSON object "
                            "(e.g. '{\"enable_thinking\": false}')",
    "request_timeout": "seconds a runtime request may take",
    "request_retries": "times a refused connection is tried again, and times a dropped or 5xx "
                       "request is sent again (with backoff; a fresh request id each time)",
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


def positive_float(text: str) -> float:
    """argparse type: a number above 0."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be above 0, got {value:g}")
    return value


def json_object(text: str) -> dict:
    """argparse type: a JSON object.

    >>> json_object('{"enable_thinking": false}')
    {'enable_thinking': False}
    """
    try:
        value = json.loads(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(f"expected a JSON object, got {text!r} ({e})") from None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError(f"expected a JSON object, got {text!r}")
    return value


def add_config_flags(parser: argparse.ArgumentParser) -> None:
    """One flag per ``SpecReasonConfig`` field (``--token-budget``, ``--pipeline/--no-pipeline``,
    ...); each defaults to None, so that ``config_from_args`` knows what was given."""
    group = parser.add_argument_group("SpecReason settings")
    defaults = SpecReasonConfig()
    for f in dataclasses.fields(SpecReasonConfig):
        default = getattr(defaults, f.name)
        flag = "--" + f.name.replace("_", "-")
        if isinstance(default, bool):
            group.add_argument(flag, action=argparse.BooleanOptionalAction, default=None,
                               help=f"{CONFIG_HELP[f.name]} (default {'on' if default else 'off'})")
            continue
        kind = {int: int, float: float, str: str}.get(type(default), int)
        if f.name in ("threshold", "draft_temperature", "base_temperature", "top_p", "request_timeout"):
            kind = float
        if f.name == "chat_template_kwargs":
            kind = json_object
        extra = {"score_method": {"choices": list(JUDGES)},
                 "speculate": {"choices": list(POLICIES)},
                 "framing": {"choices": list(FRAMINGS)}}.get(f.name, {})
        group.add_argument(flag, type=kind, default=None,
                           help=f"{CONFIG_HELP.get(f.name, f.name.replace('_', ' '))} ({default_help(f.name)})",
                           **extra)


def default_help(field: str) -> str:
    """The default of a config field as ``--help`` states it: the one that applies where.

    >>> default_help("token_budget")
    'default 8192'
    """
    default = getattr(SpecReasonConfig(), field)
    if field not in LOCAL_PAIR_DEFAULTS:
        return f"default {default}"
    return (f"default {LOCAL_PAIR_DEFAULTS[field]} when the default draft and base models are "
            f"served locally, {default} with --draft-url/--base-url or other models")


#: what ``sglang.launch_server --dtype`` accepts
DTYPES = ("auto", "half", "float16", "bfloat16", "float", "float32")


def add_runtime_flags(parser: argparse.ArgumentParser) -> None:
    """The flags of ``RuntimeOptions``: a URL per role, or the model to serve locally and how."""
    group = parser.add_argument_group("runtimes (give URLs, or models to serve locally)")
    d = RuntimeOptions()
    cpu, cuda = DEVICE_DEFAULTS["cpu"], DEVICE_DEFAULTS["cuda"]
    for role in (DRAFT, BASE):
        group.add_argument(f"--{role}-url", help=f"URL of a running SGLang server, or SGLang's router in front of several, for the {role} model")
        group.add_argument(f"--{role}-model", default=getattr(d, f"{role}_model"),
                           help=f"offline model name ({', '.join(models.MODELS)}) or a local Hugging "
                                f"Face folder (default {getattr(d, f'{role}_model')})")
        group.add_argument(f"--{role}-dtype", choices=DTYPES,
                           help=f"dtype of the local {role} server (default: "
                                f"{cpu.dtype(role)} on cpu, {cuda.dtype(role)} (the model's own) on cuda)")
        group.add_argument(f"--{role}-template", choices=sorted(TEMPLATES),
                           help="a hand-written prompt template in place of the model's own chat "
                                "template (default: its tokenizer's; a hand-written one by the "
                                "model's name only when that tokenizer has none)")
        group.add_argument(f"--{role}-port", type=int, help="port of the local server (default: a free one)")
    group.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"),
                       help="where local servers run (default auto: cuda when a GPU is visible, "
                            f"else cpu). Why the defaults differ: cpu - {cpu.why}; cuda - {cuda.why}")
    group.add_argument("--threads", type=positive_int,
                       help="OMP threads per local CPU server (default: 2 when one runtime works at "
                            "a time, 1 with --parallel > 1, --pipeline or --race-base-step; none "
                            "set on cuda)")
    group.add_argument("--max-total-tokens", type=positive_int,
                       help=f"KV pool size of each local server, in tokens (default: "
                            f"{cpu.max_total_tokens} on cpu; on cuda none, SGLang sizes the pool "
                            f"from --mem-fraction-static)")
    group.add_argument("--dry-run", action="store_true",
                       help="print each local server's command line and environment changes, and "
                            "start nothing (model names are printed as given, not prepared)")
    group.add_argument("--log-dir", type=Path, default=d.log_dir, help="server logs go here")
    group.add_argument("--api-key", help="API key of the given servers")
    group.add_argument("--connections", type=positive_int,
                       help=f"keep-alive HTTP connections to each runtime at most (default: "
                            f"{d.connections}, or {CONNECTIONS_PER_PROBLEM} per problem in flight "
                            "when that is more)")
    group.add_argument("--keep-alive", type=positive_float, metavar="SECONDS", dest="keepalive_s",
                       help=f"seconds an idle connection to a given URL is kept (default {KEEPALIVE_S:g}: "
                            f"SGLang's servers close theirs after {SGLANG_KEEPALIVE_S} s; "
                            f"scripts/launch_runtimes.py starts them with "
                            f"SGLANG_TIMEOUT_KEEP_ALIVE={LOCAL_KEEPALIVE_S}, so "
                            f"{client_keepalive(LOCAL_KEEPALIVE_S):g} suits those); local servers need nothing")
    for role in (DRAFT, BASE):
        group.add_argument(f"--{role}-tokenizer", metavar="FOLDER",
                           help=f"local tokenizer folder of the {role} model: its chat template "
                                "renders the prompts, and token counts are computed here instead of "
                                "asking the runtime's /tokenize (checked against it once); 'runtime' "
                                "always asks it (default: the runtime's own tokenizer or model folder, "
                                "when it is a folder here; needed for a runtime given by URL whose "
                                "model is not a folder here)")


# The rule for the default local CPU pair, chosen on GSM8K train (the development split): the
# base model writes the first step, then a drafted step is kept when its worst number token is
# likely enough to the base model (likelihood-numbers >= 9). Why, with the measured figures of
# every rule tried: eval/reports/gsm8k-train-frontier/README.md. Given URLs or other models keep
# the paper's judge (greedy >= 7) unless told otherwise.
LOCAL_PAIR_DEFAULTS = {"score_method": "likelihood-numbers", "threshold": 9.0, "first_n_base_steps": 1}

# The rule for a conversation put as written (``plain``: serve's chats, OpenAI batch lines), for
# every pair that is not given one: a drafted step is kept when its worst 3-token window is
# likely enough to the base model (likelihood-min >= 6, log-prob >= -4 a token there), and the
# draft writes from the first step. Measured on real drafts of the general requests
# (eval/general_requests.jsonl) against corrupted twins: likelihood-min separates them with
# AUROC 0.95 (at 6: 86 % of the drafts kept, 11 % of the twins), likelihood-numbers 0.82 (in
# prose its worst number token is often no number at all), the paper's question 0.47 (no
# better than chance); eval/reports/general-requests/judges. The local pair's first base step
# (kept for GSM8K's accuracy) is not kept here: most chat replies are one paragraph, which the
# base model would then write whole.
PLAIN_DEFAULTS = {"score_method": "likelihood-min", "threshold": 6.0, "first_n_base_steps": 0}


def uses_local_pair(args) -> bool:
    """True when the command serves the default draft and base models locally."""
    d = RuntimeOptions()
    return (not getattr(args, "draft_url", None) and not getattr(args, "base_url", None)
            and getattr(args, "draft_model", d.draft_model) == d.draft_model
            and getattr(args, "base_model", d.base_model) == d.base_model)


def config_from_args(args, framing: Optional[str] = None) -> SpecReasonConfig:
    """The config the flags of ``add_config_flags`` give: what was given, over the measured
    rules (the local pair's when the default models are served locally; under ``plain``, the
    judge and threshold measured on general requests), over the dataclass defaults.
    ``framing``: how the command puts its requests when ``--framing`` is not given."""
    given = {f.name: getattr(args, f.name) for f in dataclasses.fields(SpecReasonConfig)
             if getattr(args, f.name, None) is not None}
    if framing is not None:
        given.setdefault("framing", framing)
    defaults = dict(LOCAL_PAIR_DEFAULTS) if uses_local_pair(args) else {}
    if given.get("framing") == PLAIN:
        defaults.update(PLAIN_DEFAULTS)
    return SpecReasonConfig(**{**defaults, **given})


#: requests one problem can have in flight to one runtime, besides its drafts' forks: a
#: pipelined draft or a raced base step beside the judgement, and an abort
CONNECTIONS_PER_PROBLEM = 3


def runtime_options(args, parallel: int = 1) -> RuntimeOptions:
    """The runtimes the flags of ``add_runtime_flags`` name; ``parallel``: problems in flight at
    once, which sets the default threads per local CPU server."""
    # Two CPU runtimes busy at once (problems in parallel, pipelining, the race) share the
    # cores: one OMP thread each is much faster together than two each (the figures: docs/usage.md,
    # "On a CPU").
    both_busy = parallel > 1 or getattr(args, "pipeline", None) or getattr(args, "race_base_step", None)
    threads = args.threads or (1 if both_busy else 2)
    per_problem = CONNECTIONS_PER_PROBLEM + (getattr(args, "num_drafts", None) or 1) - 1
    connections = getattr(args, "connections", None) or max(RuntimeOptions.connections,
                                                            parallel * per_problem)
    return RuntimeOptions(
        draft_url=args.draft_url, base_url=args.base_url, draft_model=args.draft_model,
        base_model=args.base_model, draft_template=args.draft_template,
        base_template=args.base_template, draft_dtype=args.draft_dtype, base_dtype=args.base_dtype,
        device=args.device, threads=threads, max_total_tokens=args.max_total_tokens,
        draft_port=args.draft_port, base_port=args.base_port, log_dir=args.log_dir,
        api_key=args.api_key, connections=connections, keepalive_s=getattr(args, "keepalive_s", None),
        draft_tokenizer=getattr(args, "draft_tokenizer", None),
        base_tokenizer=getattr(args, "base_tokenizer", None),
    )


def guarded(job: Callable[[], int], interrupted: str) -> int:
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
