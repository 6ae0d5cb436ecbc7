"""The report's command line (``python -m eval.report RESULT_FILE``): the report written again
from a result file's records alone, e.g. with another ``--baseline``, or with ``--costs`` a
projection of the same calls on other hardware."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Optional, Sequence

from sgl_specreason.errors import ConfigError
from sgl_specreason.eval.costs import Costs
from sgl_specreason.eval.report.build import build_report
from sgl_specreason.eval.report.output import write_report
from sgl_specreason.trace import BASE


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m eval.report",
        description="Write the report of an evaluation's result file again, from its records alone.")
    parser.add_argument("result_file", type=Path)
    parser.add_argument("--report-dir", type=Path, default=Path("results/report"))
    parser.add_argument("--baseline", default=BASE, help="the mode speedups are measured against")
    parser.add_argument("--modes", nargs="*", default=[], help="rows of these modes first, in this order")
    parser.add_argument("--dataset", help="only this data set (default: every one in the file)")
    parser.add_argument("--costs", type=Path, metavar="COSTS.json",
                        help="also project every mode's latency and speedup with these per-role costs "
                             "(decode ms per token, prefill ms per new prompt token, ms per request; "
                             "e.g. eval/costs/h100-r1-distill-1.5b-qwq-32b.json): a simulation from "
                             "the records' own calls, shown apart from the measured columns")
    args = parser.parse_args(argv)
    if not args.result_file.is_file():
        parser.error(f"{args.result_file}: no such file")
    try:
        projection = Costs.load(args.costs) if args.costs else None
    except ConfigError as e:
        parser.error(str(e))
    report = build_report(args.result_file, args.modes, args.dataset, args.baseline, projection)
    if not report["rows"]:
        parser.error(f"{args.result_file} holds no evaluation records"
                     + (f" of data set {args.dataset}" if args.dataset else ""))
    paths = write_report(report, args.report_dir)
    print(report["markdown"])
    print("report: " + ", ".join(str(p) for p in paths))
    return 0
