"""Requests that are not math, through ``serve`` on real runtimes: does a run end where the model
ends it, with no boxed answer, and what does speculation buy on them?

    python -m eval.general_requests --out-dir eval/reports/general-requests

Every request of ``eval/general_requests.jsonl`` (writing, explanation, code, SQL, advice, a
summary, a translation, multi-turn follow-ups) is sent to ``sgl-specreason serve`` as a chat
request with the plain framing (serve's default) and ``max_tokens`` 300, twice: as the server
runs it (``specreason``: drafted and judged steps, with the judge serve picks for its pair) and
with ``"specreason": {"speculate": "never"}`` (``never``: the base model writes every step, the
baseline of the load tests). One request at a time, the two ways one after the other, so that
wall times are those of one request alone. ``serve`` starts the default local CPU pair itself,
exactly as a user's ``sgl-specreason serve`` does; ``--serve-flag`` adds flags.

Each reply is appended to ``records.jsonl`` as it comes (the ``specreason`` one with its step
trace: every draft, its score and what was kept, which ``eval.general_judges`` reads); a rerun
goes on where it stopped. ``report.md`` gives per request: why it stopped, whether it holds
``\\boxed``, tokens, wall time and acceptance, both ways, and the totals against the targets
(at least 90 % of replies end by themselves; none holds ``\\boxed``).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Dict, List, Optional

from sgl_specreason.eval.datasets import general_requests as load_requests
from sgl_specreason.eval.serve_load.processes import Serve
from sgl_specreason.runtime import free_port
from sgl_specreason.store import ResultStore

WAYS = {"specreason": {}, "never": {"speculate": "never"},
        # a rejected draft's start that the judge would keep is kept, the base model writes on
        "keep-prefix": {"keep_draft_prefix": True}}
#: the ways sent unless ``--ways`` says otherwise
DEFAULT_WAYS = ["specreason", "never"]
#: a reply that stopped for this reason ran into the cap
CAPPED = "length"


def chat(url: str, body: dict, timeout: float) -> dict:
    """One chat completion: the reply's JSON, or ``{"error": ...}`` naming what failed."""
    request = urllib.request.Request(url + "/v1/chat/completions", data=json.dumps(body).encode(),
                                     headers={"Content-Type": "application/json"}, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as reply:
            return json.loads(reply.read())
    except urllib.error.HTTPError as e:
        return {"error": f"HTTP {e.code}: {e.read().decode(errors='replace')[:500]}"}
    except OSError as e:
        return {"error": f"{type(e).__name__}: {e}"}


def record(request: dict, way: str, reply: dict, wall_s: float) -> dict:
    """What the report needs of one reply."""
    out = {"id": request["id"], "kind": request["kind"], "way": way, "wall_s": round(wall_s, 2)}
    if "error" in reply:
        return {**out, "error": reply["error"]}
    choice, ext = reply["choices"][0], reply.get("specreason") or {}  # serve's account of the run
    message = choice["message"]
    content, reasoning = message.get("content") or "", message.get("reasoning_content") or ""
    usage = reply.get("usage") or {}
    return {**out, "finish_reason": choice.get("finish_reason"), "stop_reason": ext.get("stop_reason"),
            "completion_tokens": usage.get("completion_tokens"),
            "reasoning_tokens": (usage.get("completion_tokens_details") or {}).get("reasoning_tokens"),
            "boxed": "\\boxed" in content + reasoning, "steps": ext.get("steps"),
            "acceptance": ext.get("acceptance"), "judge": ext.get("judge"), "threshold": ext.get("threshold"),
            "content": content, "reasoning_content": reasoning, "trace": ext.get("trace")}


def summary(records: List[dict]) -> Dict[str, dict]:
    """Per way: replies, errors, ended by themselves, capped, holding ``\\boxed``, medians."""
    out = {}
    for way in WAYS:
        rows = [r for r in records if r["way"] == way]
        good = [r for r in rows if "error" not in r]
        out[way] = {
            "replies": len(rows), "errors": len(rows) - len(good),
            "drafted_steps": sum((r["steps"] or {}).get("drafted", 0) for r in good),
            "kept_drafts": sum((r["steps"] or {}).get("kept", 0) for r in good),
            "ended": sum(r["finish_reason"] != CAPPED for r in good),
            "capped": sum(r["finish_reason"] == CAPPED for r in good),
            "boxed": sum(r["boxed"] for r in good),
            "median_wall_s": statistics.median([r["wall_s"] for r in good]) if good else None,
            "median_tokens": statistics.median([r["completion_tokens"] for r in good]) if good else None,
            "total_wall_s": sum(r["wall_s"] for r in good),
            "total_tokens": sum(r["completion_tokens"] for r in good),
            # rejected drafts whose start was kept, and the draft tokens so kept (keep-prefix)
            "leads": sum(bool(s.get("lead_tokens")) for r in good for s in _steps(r)),
            "lead_tokens": sum(map(lead_tokens, good)),
        }
    return out


def _steps(record: dict) -> List[dict]:
    return (record.get("trace") or {}).get("steps") or []


def lead_tokens(record: dict) -> int:
    """The draft tokens a reply's rewritten steps kept (``keep_draft_prefix``)."""
    return sum(s.get("lead_tokens") or 0 for s in _steps(record))


def leads_line(s: Dict[str, dict]) -> List[str]:
    """What keeping a rejected draft's start did, beside ``specreason`` (where both were sent)."""
    kp, sr = s["keep-prefix"], s["specreason"]
    if not kp["total_wall_s"] or not sr["total_wall_s"]:
        return []
    rejected = kp["drafted_steps"] - kp["kept_drafts"]
    return ["", f"keep-prefix: {kp['leads']} of its {rejected} rejected drafts kept a start "
                f"({kp['lead_tokens']} draft tokens in all), and the base model wrote on from there. "
                f"Total wall time of specreason over keep-prefix on the same requests: "
                f"{sr['total_wall_s'] / kp['total_wall_s']:.2f}x."]


def report(records: List[dict], command: str, max_tokens: int = 300) -> str:
    def fmt(x, spec="g"):
        return "-" if x is None else format(x, spec)

    by = {(r["id"], r["way"]): r for r in records}
    rows = ["| request | kind | way | finish (stop reason) | `\\boxed` | tokens (thinking) | wall s | "
            "steps drafted / kept | acceptance |", "|---|---|---|---|---|---:|---:|---|---:|"]
    for request in load_requests():
        for way in WAYS:
            r = by.get((request["id"], way))
            if r is None:
                continue
            if "error" in r:
                rows.append(f"| {r['id']} | {r['kind']} | {way} | error: {r['error'][:80]} | | | | | |")
                continue
            steps = r["steps"] or {}
            lead = lead_tokens(r)
            rows.append(f"| {r['id']} | {r['kind']} | {way} | {r['finish_reason']} ({r['stop_reason']}) | "
                        f"{'YES' if r['boxed'] else 'no'} | {r['completion_tokens']} ({r['reasoning_tokens']}) | "
                        f"{r['wall_s']:.1f} | {steps.get('drafted', 0)} / {steps.get('kept', 0)}"
                        f"{f' (+ {lead} lead tokens)' if lead else ''} | "
                        f"{fmt(r['acceptance'], '.2f')} |")
    s = summary(records)
    lines = ["| way | replies | errors | ended by themselves | ran into the cap | hold `\\boxed` | "
             "median tokens | median wall s | total wall s |", "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for way, t in s.items():
        if not t["replies"]:  # a way not sent (--ways) has no row
            continue
        share = f" ({t['ended'] / (t['replies'] - t['errors']):.0%})" if t["replies"] > t["errors"] else ""
        lines.append(f"| {way} | {t['replies']} | {t['errors']} | {t['ended']}{share} | {t['capped']} | "
                     f"{t['boxed']} | {fmt(t['median_tokens'])} | {fmt(t['median_wall_s'], '.1f')} | "
                     f"{t['total_wall_s']:.0f} |")
    sr, nv = s["specreason"], s["never"]
    judge = next((f"{r['judge']} >= {r['threshold']:g}" for r in records
                  if r["way"] == "specreason" and r.get("judge")), "-")
    ratio = (f"{nv['total_wall_s'] / sr['total_wall_s']:.2f}x" if sr["total_wall_s"] and nv["total_wall_s"] else "-")
    return "\n".join([
        f"# General requests through serve (plain framing, max_tokens {max_tokens})", "",
        "```", command, "```", "",
        f"The judge serve used: {judge}. Drafted steps {sr['drafted_steps']}, kept "
        f"{sr['kept_drafts']}. Total wall time of never over specreason on the same requests: {ratio}.",
        *leads_line(s), "", *lines, "", "Per request:", "", *rows, ""]) + "\n"


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m eval.general_requests", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out-dir", type=Path, default=Path("eval/reports/general-requests"))
    parser.add_argument("--max-tokens", type=int, default=300)
    parser.add_argument("--max-total-tokens", type=int, default=16384, help="each local runtime's KV pool")
    parser.add_argument("--request-timeout", type=float, default=1800)
    parser.add_argument("--serve-flag", action="append", default=[], metavar="FLAG",
                        help="one more serve flag (repeat it; e.g. --serve-flag=--score-method=likelihood)")
    parser.add_argument("--ways", nargs="+", choices=list(WAYS), default=DEFAULT_WAYS,
                        help=f"which ways to send each request (default {' and '.join(DEFAULT_WAYS)}; "
                             "keep-prefix: the specreason way with keep_draft_prefix)")
    parser.add_argument("--ids", nargs="+", metavar="ID",
                        help="only these requests (e.g. the ones that ran into the cap, again with more --max-tokens)")
    parser.add_argument("--report-only", action="store_true", help="write the report from the records")
    args = parser.parse_args(argv)
    requests = load_requests()
    unknown = sorted(set(args.ids or ()) - {q["id"] for q in requests})
    if unknown:
        parser.error(f"--ids: no request with id {', '.join(unknown)} in eval/general_requests.jsonl")
    requests = [q for q in requests if not args.ids or q["id"] in args.ids]
    args.out_dir.mkdir(parents=True, exist_ok=True)
    store = ResultStore(args.out_dir / "records.jsonl")
    # the command that made the records: --report-only only rewrites the report from them
    command = "python -m eval.general_requests " + " ".join(
        a for a in (argv if argv is not None else sys.argv[1:]) if a != "--report-only")
    done = store.done(lambda r: (r["id"], r["way"]), require="way")
    todo = [(q, way) for q in requests for way in args.ways if (q["id"], way) not in done]
    if todo and not args.report_only:
        port = free_port()
        serve = Serve([sys.executable, "-m", "sgl_specreason.cli", "serve", "--port", str(port),
                       "--max-total-tokens", str(args.max_total_tokens), "--threads", "1", "--seed", "0",
                       "--log-dir", str(args.out_dir / "logs"), *args.serve_flag],
                      args.out_dir / "logs" / "serve.log", f"http://127.0.0.1:{port}")
        serve.start()
        try:
            serve.wait_ready(1800)
            with store.append() as writer:
                for i, (request, way) in enumerate(todo, 1):
                    body = {"model": "specreason", "messages": request["messages"], "max_tokens": args.max_tokens,
                            "specreason": {"trace": True, **WAYS[way]}}
                    started = time.perf_counter()
                    reply = chat(serve.url, body, args.request_timeout)
                    row = record(request, way, reply, time.perf_counter() - started)
                    writer.write(row)
                    print(f"[{i}/{len(todo)}] {request['id']} {way}: "
                          + (row["error"] if "error" in row else
                             f"{row['finish_reason']} ({row['stop_reason']}) {row['completion_tokens']} tokens "
                             f"{row['wall_s']:.1f} s acceptance {row['acceptance']}"), flush=True)
        finally:
            serve.stop()
    records = list(store.final(lambda r: (r["id"], r["way"]), "way").values())
    text = report(records, command, args.max_tokens)
    (args.out_dir / "report.md").write_text(text, encoding="utf-8")
    (args.out_dir / "summary.json").write_text(json.dumps(summary(records), indent=1) + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
