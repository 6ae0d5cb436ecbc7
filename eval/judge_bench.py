"""How well does the base model tell a correct reasoning step from a corrupted one?

    python -m eval.judge_bench --num-problems 40                 # local CPU base runtime
    python -m eval.judge_bench --base-url http://gpu1:30000 --num-problems 200
    sgl-specreason judge-bench ...                               # the same

For each pair of ``eval.corrupt`` (a GSM8K reference step and its twin with one error, on the
same prefix) every registered judge that can score one step alone (``bench_judges``) scores both
steps on the base runtime, the way SpecReason's program asks it: one call per kind of question
the judges ask, the paper's question (one token, top-k digits: ``greedy`` and ``average``) and
one prefill of the step with its log-probabilities (the ``likelihood`` methods). The report gives
per method the AUROC of original against corrupted, the acceptance of each at each threshold,
the threshold that separates them best, histograms, and what each judge call cost (new prompt
tokens after the radix cache, server time). Each scored step is appended to the records file at
once; rerunning the same command goes on where it stopped.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import jsonlines
import numpy as np

from sgl_specreason.eval.corrupt import KINDS, Pair, gsm8k_problems, make_pairs
from sgl_specreason.programs import judge_steps
from sgl_specreason.calls import call, step_spans
from sgl_specreason.flags import (
    add_config_flags,
    add_runtime_flags,
    config_from_args,
    guarded,
    positive_int,
    runtime_options,
)
from sgl_specreason.config import SpecReasonConfig
from sgl_specreason.runner import dry_run, open_runtimes
from sgl_specreason.judges import JUDGES, QUESTION, STEP, Candidates, Judge
from sgl_specreason.store import ResultStore
from sgl_specreason.trace import BASE

#: what each kind of question to the base runtime is called in the records' costs and reports
CALLS = {QUESTION: "paper", STEP: "likelihood"}
#: thresholds the acceptance table shows (all methods score on 0..10)
THRESHOLDS = (3, 4, 5, 6, 6.5, 7, 7.5, 8, 8.5, 9)


def bench_judges() -> List[Judge]:
    """The registered judges this benchmark asks: those that score one step alone (``min_drafts``
    1) without the draft model's log-probabilities (a reference step has none). The judges that
    compare drafts or the two models are measured by ``eval.draft_bench``."""
    return [j for j in JUDGES.values() if j.min_drafts <= 1 and not j.needs_draft_logprobs]


def held_scores(scores: Sequence[Dict[str, float]]) -> List[str]:
    """The names every one of ``scores`` holds a score of, in the order the first lists them: what
    a report of records can show (records made before a judge existed have no score of it).

    >>> held_scores([{"a": 1, "b": 2, "c": 3}, {"c": 3, "a": 1}])
    ['a', 'c']
    """
    return [name for name in (scores[0] if scores else ()) if all(name in s for s in scores)]


def ask_base(base, question: str, steps: List[str], step: str, asks: Sequence[str],
             top_logprobs: int) -> Tuple[dict, Dict[str, float], int]:
    """The base runtime's replies on ``step`` after ``steps``, one call per kind of question in
    ``asks``, in that order: ``QUESTION`` the paper's question (one token, its ``top_logprobs``),
    ``STEP`` one prefill of the step with its tokens' log-probs. Returns the replies and the
    wall seconds of each call by kind, and the step's length in base-model tokens."""
    template = base.template
    prefix = template.reasoning(question, steps)
    replies, walls, length = {}, {}, None
    for kind in asks:
        started = time.perf_counter()
        if kind == QUESTION:
            continuation, start, top = template.judge(question, steps + [step]), None, top_logprobs
        elif kind == STEP:
            start, (length,) = step_spans(base.backend, prefix, [step])
            continuation, top = template.reasoning(question, steps + [step]), 1
        else:
            raise ValueError(f"the base runtime is not asked {kind!r}")
        replies[kind] = call(judge_steps, base.backend, prefix=prefix,
                             continuations=[continuation[len(prefix):]], top_logprobs=top,
                             logprob_start=start)[0]
        walls[kind] = time.perf_counter() - started
    if length is None:
        _, (length,) = step_spans(base.backend, prefix, [step])
    return replies, walls, length


def auroc(positive: Sequence[float], negative: Sequence[float]) -> Optional[float]:
    """Probability that a random positive scores above a random negative (ties count half):
    0.5 is a judge that cannot tell them apart, 1.0 a perfect one.

    >>> auroc([3, 4, 5], [1, 2, 3])
    0.9444444444444444
    >>> auroc([9, 9], [9, 9])
    0.5
    """
    if not len(positive) or not len(negative):
        return None
    pos, neg = np.asarray(positive, float)[:, None], np.asarray(negative, float)[None, :]
    return float((pos > neg).mean() + 0.5 * (pos == neg).mean())


def best_threshold(positive: Sequence[float], negative: Sequence[float]) -> Dict[str, float]:
    """The cut that maximises (originals accepted) - (corrupted accepted), Youden's J.

    >>> best_threshold([5, 6, 7], [1, 2, 6])
    {'threshold': 5.0, 'accept_original': 1.0, 'accept_corrupted': 0.3333333333333333}
    """
    pos, neg = np.asarray(positive, float), np.asarray(negative, float)
    best = None
    for cut in np.unique(np.concatenate([pos, neg])):
        tpr, fpr = float((pos >= cut).mean()), float((neg >= cut).mean())
        if best is None or tpr - fpr > best[1] - best[2]:
            best = (float(cut), tpr, fpr)
    return {"threshold": best[0], "accept_original": best[1], "accept_corrupted": best[2]}


def threshold_keeping(positive: Sequence[float], negative: Sequence[float], share: float) -> Dict[str, float]:
    """The highest cut that still accepts ``share`` of the originals (a false rejection costs a
    base-model step, a false acceptance costs accuracy), and what it accepts of each.

    >>> threshold_keeping([1, 2, 3, 4, 5, 6, 7, 8, 9, 10], [1, 1, 2], 0.9)["threshold"]
    2.0
    """
    pos, neg = np.sort(np.asarray(positive, float)), np.asarray(negative, float)
    cut = float(pos[int(np.floor((1 - share) * len(pos) + 1e-9))])
    return {"threshold": cut, "accept_original": float((pos >= cut).mean()),
            "accept_corrupted": float((neg >= cut).mean())}


def call_cost(meta: dict) -> dict:
    """What one runtime call cost, from its ``meta_info``: prompt tokens, those the radix cache
    served, the new ones, the tokens it generated, and its server time."""
    prompt, cached = int(meta.get("prompt_tokens") or 0), int(meta.get("cached_tokens") or 0)
    return {"prompt_tokens": prompt, "cached_tokens": cached, "new_tokens": prompt - cached,
            "completion_tokens": int(meta.get("completion_tokens") or 0),
            "server_s": float(meta.get("e2e_latency") or 0.0)}


def show(report: dict, paths: Sequence[Path]) -> int:
    """Print a benchmark's report and where it was written; the command's exit code."""
    print("\n" + report["markdown"])
    print("report: " + ", ".join(str(p) for p in paths))
    return 0


def judge_pair_step(base, pair: Pair, variant: str, cfg: SpecReasonConfig,
                    judges: Optional[Sequence[Judge]] = None) -> dict:
    """Every judge's score of one step of a pair (``variant`` "original" or "corrupted"),
    ``judges`` (``bench_judges()`` unless given): one call with the paper's question if one of
    them asks it, one prefill of the step if one of them reads its log-probs."""
    judges = bench_judges() if judges is None else judges
    step = getattr(pair, variant)
    q = pair.question
    asks = [kind for kind in (QUESTION, STEP) if any(j.asks == kind for j in judges)]
    replies, _, length = ask_base(base, q, pair.steps, step, asks, cfg.judge_top_logprobs)
    scored = {j.name: j.score(Candidates(q, len(pair.steps), cfg.seed, [step], [{}],
                                         [replies[j.asks]] if j.asks in replies else [],
                                         [length]))[0]
              for j in judges}
    # the paper's judges carry the digit distribution of their reply
    digits = next((s.digits for s in scored.values() if s.digits), {})
    return {"pair": pair.id, "problem_id": pair.problem_id, "kind": pair.kind, "variant": variant,
            "step": step, "step_tokens": length,
            "scores": {name: float(s.value) for name, s in scored.items()},
            "digits": {str(d): p for d, p in digits.items()},
            "cost": {CALLS[kind]: call_cost(replies[kind]) for kind in asks}}


def build_report(records: List[dict], methods: Optional[Sequence[str]] = None,
                 kinds: Sequence[str] = KINDS) -> dict:
    """Per method (``methods``, or every one the records hold a score of for every step):
    AUROC (overall and per corruption kind of ``kinds``), acceptance at THRESHOLDS, the best cut;
    per prompt kind: mean new tokens and server time of a judge call."""
    if methods is None:  # no records: the judges a run would ask
        methods = (held_scores([r["scores"] for r in records]) if records
                   else [j.name for j in bench_judges()])
    pairs = {}
    for r in records:
        pairs.setdefault(r["pair"], {})[r["variant"]] = r
    complete = [p for p in pairs.values() if "original" in p and "corrupted" in p]
    rows = []
    for method in methods:
        pos = [p["original"]["scores"][method] for p in complete]
        neg = [p["corrupted"]["scores"][method] for p in complete]
        row = {"method": method, "pairs": len(complete), "auroc": auroc(pos, neg),
               "mean_original": float(np.mean(pos)) if pos else None,
               "mean_corrupted": float(np.mean(neg)) if neg else None,
               "by_kind": {}, "accept": {}}
        for kind in kinds:
            sel = [p for p in complete if p["original"]["kind"] == kind]
            row["by_kind"][kind] = auroc([p["original"]["scores"][method] for p in sel],
                                         [p["corrupted"]["scores"][method] for p in sel])
        for t in THRESHOLDS:
            row["accept"][f"{t:g}"] = [float(np.mean([s >= t for s in pos])) if pos else None,
                                       float(np.mean([s >= t for s in neg])) if neg else None]
        row["best"] = best_threshold(pos, neg) if pos else None
        row["keep90"] = threshold_keeping(pos, neg, 0.9) if pos else None
        rows.append(row)
    cost = {}
    for kind in ("paper", "likelihood"):
        calls = [r["cost"][kind] for r in records if kind in r["cost"]]
        cost[kind] = {key: float(np.mean([c[key] for c in calls])) if calls else None
                      for key in ("prompt_tokens", "cached_tokens", "new_tokens", "server_s")}
    cost["step_tokens"] = float(np.mean([r["step_tokens"] for r in records])) if records else None
    return {"rows": rows, "cost": cost, "markdown": markdown(rows, cost, kinds)}


def markdown(rows: List[dict], cost: dict, kinds: Sequence[str] = KINDS) -> str:
    def f(x, digits=3):
        return "-" if x is None else f"{x:.{digits}f}"

    lines = ["| method | pairs | AUROC | " + " | ".join(f"AUROC {k}" for k in kinds)
             + " | mean score orig / corrupted | best cut: accepted orig / corrupted "
             "| cut keeping 90 % of originals: corrupted accepted |",
             "|---|---:|---:|" + "---:|" * len(kinds) + "---|---|---|"]
    for r in rows:
        best, keep = r["best"] or {}, r["keep90"] or {}
        lines.append(
            f"| {r['method']} | {r['pairs']} | {f(r['auroc'])} | "
            + " | ".join(f(r["by_kind"][k]) for k in kinds)
            + f" | {f(r['mean_original'], 2)} / {f(r['mean_corrupted'], 2)} | "
            f"{f(best.get('threshold'), 2)}: "
            f"{f(best.get('accept_original'), 2)} / {f(best.get('accept_corrupted'), 2)} | "
            f"{f(keep.get('threshold'), 2)}: {f(keep.get('accept_corrupted'), 2)} |")
    lines += ["", "Acceptance (originals / corrupted) at each threshold:", "",
              "| method | " + " | ".join(f">= {t:g}" for t in THRESHOLDS) + " |",
              "|---|" + "---|" * len(THRESHOLDS)]
    for r in rows:
        lines.append(f"| {r['method']} | " + " | ".join(
            f"{f(a, 2)} / {f(b, 2)}" for a, b in (r["accept"][f"{t:g}"] for t in THRESHOLDS)) + " |")
    lines += ["", "Cost of one judge call (means; new = prompt tokens not served by the radix cache):", "",
              "| prompt | prompt tokens | cached | new | server s |", "|---|---:|---:|---:|---:|"]
    for kind, label in (("paper", "paper's question (greedy, average)"),
                        ("likelihood", "step only, with its log-probs (likelihood*)")):
        c = cost[kind]
        lines.append(f"| {label} | {f(c['prompt_tokens'], 1)} | {f(c['cached_tokens'], 1)} | "
                     f"{f(c['new_tokens'], 1)} | {f(c['server_s'], 3)} |")
    lines.append(f"\nJudged steps are {f(cost['step_tokens'], 1)} base-model tokens long on average.")
    return "\n".join(lines)


def plot(records: List[dict], rows: List[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(rows), figsize=(3.2 * len(rows), 3), squeeze=False)
    bins = np.linspace(0, 10, 21)
    for ax, row in zip(axes[0], rows):
        for variant, color in (("original", "tab:green"), ("corrupted", "tab:red")):
            values = [r["scores"][row["method"]] for r in records if r["variant"] == variant]
            ax.hist(values, bins=bins, alpha=0.6, color=color, label=variant)
        ax.set_title(f"{row['method']}\nAUROC {row['auroc']:.2f}" if row["auroc"] is not None
                     else row["method"], fontsize=9)
        ax.set_xlabel("score")
    axes[0][0].set_ylabel("steps")
    axes[0][0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_report(report: dict, records: List[dict], out_dir: Path) -> List[Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = [out_dir / "judge_report.jsonl", out_dir / "judge_report.md", out_dir / "judge_scores.png"]
    with jsonlines.open(paths[0], mode="w") as writer:
        writer.write_all(report["rows"] + [{"cost": report["cost"]}])
    paths[1].write_text("# Judge benchmark\n\n" + report["markdown"] + "\n", encoding="utf-8")
    plot(records, report["rows"], paths[2])
    return paths


def run(args) -> int:
    cfg = config_from_args(args)
    if args.dry_run:
        return dry_run(runtime_options(args, parallel=1), cfg, (BASE,))
    pairs = make_pairs(gsm8k_problems(args.num_problems, args.offset), args.corruption_seed, args.kinds)
    store = ResultStore(args.out_dir / "judge_records.jsonl")
    done = store.done(lambda r: (r["pair"], r["variant"]), require="pair")
    todo = [(p, v) for p in pairs for v in ("original", "corrupted") if (p.id, v) not in done]
    print(f"{len(pairs)} pairs from {args.num_problems} GSM8K problems; {len(todo)} steps to judge, "
          f"{2 * len(pairs) - len(todo)} done before")
    if todo:
        with open_runtimes(runtime_options(args, parallel=1), cfg, (BASE,)) as roles, \
                store.append() as writer:
            base = roles[BASE]
            started = time.perf_counter()
            for i, (pair, variant) in enumerate(todo, 1):
                record = judge_pair_step(base, pair, variant, cfg)
                writer.write(record)
                shown = " ".join(f"{m} {v:.2f}" for m, v in record["scores"].items())
                print(f"[{i}/{len(todo)} {time.perf_counter() - started:6.0f} s] {pair.id} "
                      f"{variant:<9} {shown}")
    wanted = {p.id for p in pairs}
    records = [r for r in store.read("pair") if r["pair"] in wanted]
    report = build_report(records)
    return show(report, write_report(report, records, args.out_dir))


def bench_parser(module: str, doc: str, problems: str, out_dir: str) -> argparse.ArgumentParser:
    """The flags every benchmark here has: which problems, where the records and report go, the
    SpecReason settings and the runtimes; ``problems`` says which problems --num-problems counts."""
    parser = argparse.ArgumentParser(prog=f"python -m {module}", description=doc,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--num-problems", type=positive_int, default=40, help=problems)
    parser.add_argument("--offset", type=int, default=0)
    parser.add_argument("--out-dir", type=Path, default=Path(out_dir))
    add_config_flags(parser)
    add_runtime_flags(parser)
    return parser


def build_parser() -> argparse.ArgumentParser:
    parser = bench_parser("eval.judge_bench", __doc__, "GSM8K test problems to take steps from",
                          "results/judge_bench")
    parser.add_argument("--corruption-seed", type=int, default=0, help="seed of the corruption generator")
    parser.add_argument("--kinds", nargs="+", default=list(KINDS), choices=KINDS)
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    return guarded(lambda: run(args), "interrupted; the local runtime stopped, judged steps "
                                      "kept: rerun the same command to go on")


if __name__ == "__main__":
    sys.exit(main())
