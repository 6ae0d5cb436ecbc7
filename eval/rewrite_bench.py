"""What a rejected draft costs the base model: the step rewritten from its start, against the step
written on from the draft's start that the judge would keep (``keep_draft_prefix``), on the same
rejected drafts, one after the other.

    python -m eval.rewrite_bench --records eval/reports/general-requests/keep-prefix/records.jsonl \\
        --out-dir eval/reports/general-requests/rewrites

The drafts are the rejected ones in ``eval.general_requests``'s records (each reply's trace: the
draft, the steps kept before it, the request's messages). Each is judged again on the base
runtime as ``serve`` judges it (``plain``, the judge and threshold the flags give, by default
serve's), which gives its lead (``passing_lead``). Then the base model writes the step twice: from
the step's start, as a rejection costs without the switch, and on from the lead; which goes first
alternates. The report gives, per draft and in all, the tokens the base model wrote and its
server time, and the tokens of the step each way ends with. A draft whose lead is empty costs the
same both ways and is written once. Records are appended as they come; a rerun goes on.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import List, Optional

from sgl_specreason.eval.datasets import general_requests as load_requests
from sgl_specreason.flags import add_config_flags, add_runtime_flags, config_from_args, guarded, runtime_options
from sgl_specreason.framing import PLAIN
from sgl_specreason.problems import make_problem
from sgl_specreason.programs.steps import Steps, problem_context
from sgl_specreason.runner import open_runtimes
from sgl_specreason.store import ResultStore, read_records
from sgl_specreason.templates import STEP_SEPARATOR
from sgl_specreason.trace import BASE


def rejected_drafts(records: List[dict], tag: str) -> List[dict]:
    """Every rejected draft of the records' traces: ``{"id", "request", "messages", "index",
    "earlier", "draft", "draft_tokens"}`` (``tag`` names the records in the ids)."""
    messages = {r["id"]: r["messages"] for r in load_requests()}
    out = []
    for record in records:
        steps = (record.get("trace") or {}).get("steps") or []
        for i, step in enumerate(steps):
            if step.get("source") == BASE and step.get("score") is not None and step.get("draft_text"):
                out.append({"id": f"{tag}:{record['way']}:{record['id']}:{i}", "request": record["id"],
                            "messages": messages[record["id"]], "index": i,
                            "earlier": [s["text"] for s in steps[:i]], "draft": step["draft_text"],
                            "draft_tokens": step["draft_tokens"]})
    return out


def written(step, started: float, lead_tokens: int) -> dict:
    """What the base model wrote for a step (on from ``lead_tokens`` of the draft's), and what it
    took."""
    [call] = [c for c in step.calls if c.kind == "step"]
    return {"tokens": call.completion_tokens, "server_s": round(call.latency_s, 3),
            "wall_s": round(time.perf_counter() - started, 3), "step_tokens": step.kept_tokens + lead_tokens,
            "text": step.text}


def rewrite_both(base, draft: dict, cfg, order: int) -> dict:
    """Judge ``draft`` again, then have the base model write the step from its start and on from
    its lead (``order`` 0: from the start first)."""
    problem = make_problem(None, id=draft["id"], messages=[(m["role"], m["content"]) for m in draft["messages"]],
                           framing=PLAIN)
    steps = Steps(base, base, problem_context(problem, cfg, [base]), cfg)  # the draft runtime is never asked: the draft is given
    earlier = draft["earlier"]
    meta = {"completion_tokens": draft["draft_tokens"], "finish_reason": {"type": "stop", "matched": STEP_SEPARATOR}}
    judged = steps.judged(earlier, [(draft["draft"], meta)])
    lead, count = steps.lead
    out = {"id": draft["id"], "request": draft["request"], "index": draft["index"],
           "draft_tokens": draft["draft_tokens"], "score": judged.score,
           "rejected": judged.score < cfg.threshold, "lead_tokens": count, "lead_text": lead,
           "first": "start" if order == 0 else "from_lead"}
    ways = [("start", "", 0), ("from_lead", lead, count)] if count else [("start", "", 0)]
    for name, text, tokens in (ways if order == 0 else ways[::-1]):
        started = time.perf_counter()
        step = steps.base_writes(earlier, max(1, cfg.step_max_tokens - tokens), lead=text)
        out[name] = written(step, started, tokens)
    return out


def summary(rows: List[dict]) -> dict:
    """Totals over the rejected drafts (those judged rejected again), and over those with a lead."""
    rows = [r for r in rows if r["rejected"]]
    led = [r for r in rows if r["lead_tokens"]]

    def total(items, way, field):
        return sum((r.get(way) or r["start"])[field] for r in items)
    out = {"drafts": len(rows), "drafts_with_lead": len(led), "lead_tokens": sum(r["lead_tokens"] for r in rows),
           "draft_tokens": sum(r["draft_tokens"] for r in rows)}
    for name, items in (("all", rows), ("with_lead", led)):
        out[name] = {way: {field: round(total(items, way, field), 2) for field in ("tokens", "server_s", "step_tokens")}
                     for way in ("start", "from_lead")}
    return out


def report(rows: List[dict], command: str) -> str:
    s = summary(rows)

    def ratio(part, field):
        a, b = s[part]["start"][field], s[part]["from_lead"][field]
        return f"{a / b:.2f}x" if b else "-"
    lines = ["# A rejected draft's rewrite: from the step's start, or on from the lead the judge keeps", "",
             "```", command, "```", "",
             f"{s['drafts']} rejected drafts (judged again; {s['draft_tokens']} draft tokens), {s['drafts_with_lead']} "
             f"with a lead ({s['lead_tokens']} tokens kept in all).", "",
             "| drafts | way | base tokens written | base server s | tokens of the final step |",
             "|---|---|---:|---:|---:|"]
    for part, label in (("all", f"all {s['drafts']}"), ("with_lead", f"the {s['drafts_with_lead']} with a lead")):
        for way in ("start", "from_lead"):
            t = s[part][way]
            lines.append(f"| {label} | {'from the start' if way == 'start' else 'on from the lead'} | "
                         f"{t['tokens']:g} | {t['server_s']:.1f} | {t['step_tokens']:g} |")
    lines += ["", f"From the start over on from the lead, all drafts: base tokens {ratio('all', 'tokens')}, "
              f"server time {ratio('all', 'server_s')}; the drafts with a lead: tokens "
              f"{ratio('with_lead', 'tokens')}, server time {ratio('with_lead', 'server_s')}.", "",
              "| draft | draft tokens | score | lead tokens | from the start: tokens, s | on from the lead: tokens, s |",
              "|---|---:|---:|---:|---|---|"]
    for r in rows:
        a, b = r["start"], r.get("from_lead")
        lines.append(f"| {r['id']} | {r['draft_tokens']} | {r['score']:.2f} | {r['lead_tokens']} | "
                     f"{a['tokens']}, {a['server_s']:.1f} | " + (f"{b['tokens']}, {b['server_s']:.1f} |" if b else "- |"))
    return "\n".join(lines) + "\n"


def run(args) -> int:
    cfg = config_from_args(args, framing=PLAIN).replace(keep_draft_prefix=True)
    drafts = [d for path in args.records
              for d in rejected_drafts(read_records(path, require="way"), path.parent.name)][:args.limit]
    store = ResultStore(args.out_dir / "records.jsonl")
    done = store.done(lambda r: r["id"], require="id")
    todo = [d for d in drafts if d["id"] not in done]
    print(f"{len(drafts)} rejected drafts; {len(todo)} to rewrite")
    if todo:
        with open_runtimes(runtime_options(args, parallel=1), cfg, (BASE,)) as roles, store.append() as writer:
            for i, draft in enumerate(todo, 1):
                row = rewrite_both(roles[BASE], draft, cfg, (len(done) + i) % 2)
                writer.write(row)
                print(f"[{i}/{len(todo)}] {row['id']} lead {row['lead_tokens']}: start "
                      f"{row['start']['tokens']} tok {row['start']['server_s']:.1f} s"
                      + (f", from the lead {row['from_lead']['tokens']} tok {row['from_lead']['server_s']:.1f} s"
                         if row.get("from_lead") else ""),
                      flush=True)
    wanted = {d["id"] for d in drafts}
    rows = [r for r in store.read("id") if r["id"] in wanted]
    command = "python -m eval.rewrite_bench " + " ".join(sys.argv[1:])
    (args.out_dir / "report.md").write_text(report(rows, command), encoding="utf-8")
    (args.out_dir / "summary.json").write_text(json.dumps(summary(rows), indent=1) + "\n")
    print(report(rows, command))
    return 0


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m eval.rewrite_bench", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--records", type=Path, nargs="+", required=True,
                        help="eval.general_requests records whose rejected drafts are rewritten")
    parser.add_argument("--out-dir", type=Path, default=Path("eval/reports/general-requests/rewrites"))
    parser.add_argument("--limit", type=int, default=None, help="the first N rejected drafts only")
    add_config_flags(parser)
    add_runtime_flags(parser)
    args = parser.parse_args(argv)
    args.out_dir.mkdir(parents=True, exist_ok=True)
    return guarded(lambda: run(args), "rewrite bench")


if __name__ == "__main__":
    sys.exit(main())
