"""SpecReason against its baselines on one data set, in one run: pass@1, speed, acceptance.

    python -m eval --dataset gsm8k --num-questions 50 --modes base draft specreason \\
        --thresholds 6.7 7 --score-methods average greedy --k 1
    python -m eval --modes base specreason-greedy-7 specreason-likelihood-min-2   # chosen judges
    python -m eval --modes base specreason-likelihood-numbers-6 specreason-likelihood-numbers-6+pipeline \
        specreason-likelihood-numbers-6+n2 base-gen dropin-likelihood-numbers-6

Every mode sees the same problems, token budget and sampling settings, against the same two
runtimes, one mode after the other (with ``--chunk N``: every mode on N problems, then the next
N). Each finished (problem, sample, mode) record is appended at once; rerunning the same command
skips what is done and retries what failed.
"""

from __future__ import annotations

import argparse
import re
import sys
import time
from dataclasses import asdict
from pathlib import Path
from typing import Dict, List, Optional, Sequence

from sgl_specreason.eval import datasets
from sgl_specreason.eval.report import build_report, record_key, write_report
from sgl_specreason.flags import (
    add_config_flags,
    add_runtime_flags,
    config_from_args,
    guarded,
    positive_int,
    runtime_options,
)
from sgl_specreason.config import SpecReasonConfig
from sgl_specreason.errors import ConfigError, SpecReasonError
from sgl_specreason.grading import extract
from sgl_specreason.judges import SCORE_METHODS
from sgl_specreason.problems import Problem
from sgl_specreason.modes import MODES, Variant, roles_for
from sgl_specreason.runner import Monitor, dry_run, flush_caches, open_runtimes, run_problems
from sgl_specreason.store import ResultStore, done_keys
from sgl_specreason.trace import BASE, ProblemResult


#: the programs whose modes name a judge (METHOD-THRESHOLD)
SPECULATING = tuple(name for name, mode in MODES.items() if mode.judged)
#: what may follow a SpecReason mode's name after "+": one switch of the config each
OPTION_HELP = ("nK (K drafts per step), pipeline, race (race_base_step), baseK (first K steps by the base), "
               "keep (keep_draft_prefix)")
#: the on/off switches an option names
SWITCHES = {"pipeline": "pipeline", "race": "race_base_step", "keep": "keep_draft_prefix"}


def mode_options(options: Sequence[str], name: str) -> dict:
    """Config changes named by a mode's "+" options.

    >>> mode_options(["n2", "pipeline", "keep"], "specreason+n2+pipeline+keep")
    {'num_drafts': 2, 'pipeline': True, 'keep_draft_prefix': True}
    """
    changes = {}
    for option in options:
        number = re.fullmatch(r"(n|base)(\d+)", option)
        if option in SWITCHES:
            changes[SWITCHES[option]] = True
        elif number:
            changes["num_drafts" if number[1] == "n" else "first_n_base_steps"] = int(number[2])
        else:
            raise SpecReasonError(f"bad option {option!r} in mode {name!r}: use {OPTION_HELP}")
    return changes


def plan_modes(names: Sequence[str], thresholds: Sequence[float], methods: Sequence[str],
               cfg: SpecReasonConfig) -> List[Variant]:
    modes = []
    for name in names:
        head, *options = name.split("+")
        suffix = "".join("+" + o for o in options)
        program = next((p for p in SPECULATING if head == p or head.startswith(p + "-")), None)
        if program is None:
            if head not in MODES or options:
                plain = ", ".join(n for n in MODES if n not in SPECULATING)
                raise SpecReasonError(
                    f"unknown mode {name!r}: use {plain}, {' or '.join(SPECULATING)} (with "
                    f"--score-methods and --thresholds), or "
                    f"{' / '.join(p + '-METHOD-THRESHOLD' for p in SPECULATING)}, each optionally "
                    f"followed by +OPTION ({OPTION_HELP})")
            modes.append(Variant(name, head, cfg))
            continue
        try:
            mode_cfg = cfg.replace(**mode_options(options, name))
        except ConfigError as e:
            raise SpecReasonError(f"mode {name!r}: {e}") from None
        if head == program:
            for method in methods:
                for threshold in thresholds:
                    modes.append(_judged_mode(program, method, threshold, mode_cfg, suffix))
            continue
        method, _, threshold = head[len(program) + 1:].rpartition("-")
        try:
            modes.append(_judged_mode(program, method, float(threshold), mode_cfg, suffix))
        except (ValueError, SpecReasonError) as e:
            if isinstance(e, ConfigError) and method in SCORE_METHODS:
                # a known judge with a setting it cannot work with: name the setting
                raise SpecReasonError(f"mode {name!r}: {e}") from None
            raise SpecReasonError(
                f"bad mode {name!r}: write {program}-METHOD-THRESHOLD with METHOD one of "
                f"{', '.join(SCORE_METHODS)} and THRESHOLD in 0..10, e.g. {program}-average-6.7"
            ) from None
    return modes


def _judged_mode(program: str, method: str, threshold: float, cfg: SpecReasonConfig, suffix: str) -> Variant:
    c = cfg.replace(score_method=method, threshold=threshold)
    return Variant(f"{program}-{method}-{threshold:g}{suffix}", program, c)


#: config fields that change how a run reacts to failures, not what it computes
OPERATIONAL = ("request_timeout", "request_retries")
#: each config field's default: what a record made before the field existed was made with
DEFAULT_CONFIG = {k: v for k, v in asdict(SpecReasonConfig()).items() if k not in OPERATIONAL}


def mode_settings(mode: Variant, roles: Optional[dict] = None) -> dict:
    """What a mode's records depend on: its whole config and, once the runtimes are up, the model
    (folder name, as served) and prompt template of each runtime it uses. Written into every
    record, so that a resumed run cannot mix records made with other settings."""
    out = {"config": {k: v for k, v in asdict(mode.cfg).items() if k not in OPERATIONAL}}
    if roles is not None:
        out["models"] = {role: f"{Path(roles[role].backend.model_path).name} ({roles[role].template.name})"
                         for role in roles_for(mode.mode)}
    return out


def _differences(old, new, where: str = "") -> List[str]:
    if isinstance(old, dict) and isinstance(new, dict):
        return [d for key in sorted(set(old) | set(new))
                for d in _differences(old.get(key), new.get(key), f"{where}.{key}" if where else key)]
    return [] if old == new else [f"{where}: {old!r} in the file, {new!r} now"]


def check_settings(path: Path, records: Sequence[dict], modes: Sequence[Variant],
                   roles: Optional[dict] = None) -> int:
    """Refuse to add to ``path`` records of a mode that it already holds with other settings;
    returns how many of the modes' records there carry no settings (older files).

    Only the parts known now are compared: the config before the runtimes start, the models
    after."""
    unknown = 0
    for mode in modes:
        now = mode_settings(mode, roles)
        for record in records:
            if record.get("mode") != mode.label:
                continue
            before = record.get("settings")
            if before is None:
                unknown += 1
                continue
            if "config" in before:  # a field added since the record was made has its default then
                before = {**before, "config": {**DEFAULT_CONFIG, **before["config"]}}
            differences = _differences({k: before.get(k) for k in now}, now)
            if differences:
                raise SpecReasonError(
                    f"{path} holds records of mode {mode.label} made with other settings "
                    f"({'; '.join(differences)}): rerun with those settings to go on, or give "
                    f"another --result-file")
    return unknown


def finished_keys(records: Sequence[dict]) -> set:
    """Keys of the records already done (without error): what a rerun skips."""
    return done_keys(records, record_key)


class EvalMonitor(Monitor):
    """Adds the evaluation fields to each record (graded when it was recorded, by the data set's
    kind of answer: see ``_run_mode``)."""

    def __init__(self, writer, mode: Variant, items: Dict[str, tuple], settings: dict, **kwargs):
        super().__init__(writer, **kwargs)
        self.mode = mode
        self.items = items  # result id -> (EvalProblem, sample)
        self.settings = settings

    def record(self, result: ProblemResult) -> dict:
        item, sample = self.items[result.id]
        out = result.to_dict()
        out.update(dataset=item.dataset, problem_id=item.problem.id, sample=sample,
                   mode=self.mode.label, mode_info=self.mode.to_dict(), kind=item.kind,
                   extracted=extract(result.text, item.kind), settings=self.settings)
        return out


def run(args) -> int:
    cfg = config_from_args(args)
    problems = datasets.load(args.dataset, args.num_questions, args.offset, args.seed_data)
    modes = plan_modes(args.modes, args.thresholds, args.score_methods, cfg)
    store = ResultStore(args.result_file)
    earlier = store.read("mode")
    unknown = check_settings(args.result_file, earlier, modes)  # before minutes of server start
    if unknown:
        print(f"note: {unknown} records of these modes in {args.result_file} carry no settings "
              f"(written before records had them): they are taken as made with these settings")
    done = finished_keys(earlier)
    roles_needed = sorted({r for m in modes for r in roles_for(m.mode)})
    if args.dry_run:
        return dry_run(runtime_options(args, args.parallel), cfg, roles_needed)
    print(f"{len(problems)} problems from {args.dataset}, k={args.k}, modes: {', '.join(m.label for m in modes)}")
    left = sum((item.dataset, item.problem.id, sample, mode.label) not in done
               for item in problems for sample in range(args.k) for mode in modes)
    if not left:
        print(f"every record is in {args.result_file} already: no runtime started")
    else:
        with open_runtimes(runtime_options(args, args.parallel), cfg, roles_needed) as roles, \
                store.append() as writer:
            check_settings(args.result_file, earlier, modes, roles)
            chunk = args.chunk or len(problems) or 1
            for first in range(0, len(problems), chunk):
                part = problems[first:first + chunk]
                if chunk < len(problems):
                    print(f"\n=== problems {first}-{first + len(part) - 1} of {len(problems)}")
                for mode in modes:
                    _run_mode(mode, part, args, done, roles, writer)
    # every data set in the file
    report = build_report(args.result_file, [m.label for m in modes], baseline=args.baseline)
    paths = write_report(report, args.report_dir)
    print("\n" + report["markdown"])
    print("report: " + ", ".join(str(p) for p in paths))
    return 1 if any(row["errors"] for row in report["rows"]) else 0


def _run_mode(mode: Variant, problems, args, done: set, roles: dict, writer) -> None:
    """Run ``mode`` on what of ``problems`` (k samples each) is not ``done`` yet."""
    items = {}
    todo: List[Problem] = []
    for item in problems:
        for sample in range(args.k):
            if (item.dataset, item.problem.id, sample, mode.label) in done:
                continue
            rid = f"{item.problem.id}#{sample}"
            items[rid] = (item, sample)
            todo.append(Problem(rid, item.problem.question, item.problem.answer, item.problem.choices,
                                kind=item.kind))
    print(f"\n== {mode.label}: {len(todo)} to run, {len(problems) * args.k - len(todo)} done before")
    if not todo:
        return
    # Every mode starts from empty radix caches: no mode profits from an earlier one.
    flush_caches(roles)
    monitor = EvalMonitor(writer, mode, items, mode_settings(mode, roles), show_steps=args.verbose)
    started = time.perf_counter()
    run_problems(todo, mode.cfg, roles, mode.mode, monitor, args.parallel)
    print(f"== {mode.label}: {time.perf_counter() - started:.0f} s")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m eval", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", default="gsm8k",
                        help=f"{', '.join(datasets.BUILTIN)} or a JSONL path (question, answer, choices)")
    parser.add_argument("--num-questions", type=int, default=10)
    parser.add_argument("--offset", type=int, default=0)
    parser.add_argument("--seed-data", type=int, default=0, help="seed of the choice shuffling")
    parser.add_argument("--k", type=positive_int, default=1, help="samples per problem (pass@1 is their mean)")
    parser.add_argument("--modes", nargs="+", default=["base", "draft", "specreason"])
    parser.add_argument("--thresholds", nargs="+", type=float, default=[7.0])
    parser.add_argument("--score-methods", nargs="+", default=["greedy"], choices=SCORE_METHODS)
    parser.add_argument("--parallel", type=positive_int, default=1, help="problems solved at once")
    parser.add_argument("--baseline", default=BASE,
                        help="the mode speedups are measured against (default base; e.g. "
                             "specreason-likelihood-numbers-6 to weigh pipelining or n drafts)")
    parser.add_argument("--chunk", type=positive_int,
                        help="run every mode on this many problems before the next ones, so that a "
                             "long run stopped (or resumed later) holds whole comparisons, each "
                             "taken close together in time (default: all problems per mode)")
    parser.add_argument("--result-file", type=Path, default=Path("results/eval.jsonl"))
    parser.add_argument("--report-dir", type=Path, default=Path("results/report"))
    parser.add_argument("--verbose", action="store_true", help="a line per step")
    add_config_flags(parser)
    add_runtime_flags(parser)
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    return guarded(lambda: run(args), "interrupted; local runtimes stopped, finished records "
                                      "kept: rerun the same command to go on")


if __name__ == "__main__":
    sys.exit(main())
