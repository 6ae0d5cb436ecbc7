"""Start the draft and the base SGLang servers, print their URLs, stop both on Ctrl-C / SIGTERM.

    python scripts/launch_runtimes.py                                   # the CPU pair, locally
    python scripts/launch_runtimes.py --device cuda \\
        --draft-model /models/DeepSeek-R1-Distill-Qwen-1.5B --draft-gpus 0 \\
        --base-model /models/QwQ-32B --base-gpus 1,2 --base-tp 2 --mem-fraction-static 0.85 \\
        --base-speculative-algorithm EAGLE --base-speculative-draft-model-path /models/QwQ-32B-eagle \\
        --base-speculative-num-steps 3 --base-speculative-eagle-topk 1 --base-speculative-num-draft-tokens 4

    python scripts/launch_runtimes.py --draft-workers 2 --base-workers 2 --router   # scale-out

Then point any command at them: ``sgl-specreason batch --draft-url ... --base-url ...``.
``--draft-arg`` / ``--base-arg`` pass any other ``sglang.launch_server`` flag through
(``--base-arg=--enable-torch-compile``). Server logs go to ``--log-dir``.

With ``--draft-workers N --base-workers M --router`` it starts N + M SGLang workers and one
SGLang router per role in front of them (``--router-policy``, cache-aware by default: a
problem's requests share their prefix and stay on the worker that holds it) and prints the two
router URLs (several workers without ``--router`` are refused: each role takes one URL).
"""

import argparse
import dataclasses
import shlex
import signal
import sys
import threading
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sgl_specreason.calls import wait_event  # noqa: E402
from sgl_specreason.config import SpecReasonConfig  # noqa: E402
from sgl_specreason.flags import add_runtime_flags, guarded, positive_int  # noqa: E402
from sgl_specreason.router import POLICIES, launch  # noqa: E402
from sgl_specreason.runner import RuntimeOptions, dry_run, open_runtimes  # noqa: E402
from sgl_specreason.trace import BASE, DRAFT  # noqa: E402

SPECULATIVE = ("algorithm", "draft-model-path", "num-steps", "eagle-topk", "num-draft-tokens")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="launch_runtimes.py", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add_runtime_flags(parser)
    gpu = parser.add_argument_group("GPU servers")
    for role in (DRAFT, BASE):
        gpu.add_argument(f"--{role}-tp", type=int, help=f"tensor parallel size of the {role} server")
        gpu.add_argument(f"--{role}-gpus", help=f"CUDA_VISIBLE_DEVICES of the {role} server, e.g. 1,2")
        gpu.add_argument(f"--{role}-arg", action="append", default=[], metavar="FLAG",
                         help=f"one more sglang.launch_server flag for the {role} server (repeatable)")
    gpu.add_argument("--mem-fraction-static", type=float, help="GPU memory fraction for weights and KV cache")
    spec = parser.add_argument_group("token-level speculative decoding on the base server")
    for name in SPECULATIVE:
        spec.add_argument(f"--base-speculative-{name}", help=f"--speculative-{name} of the base server")
    parser.add_argument("--seed", type=int, help="--random-seed of both servers")
    scale = parser.add_argument_group("scale-out on SGLang's router")
    for role in (DRAFT, BASE):
        scale.add_argument(f"--{role}-workers", type=positive_int, default=1, help=f"{role} workers (default 1)")
    scale.add_argument("--router", action="store_true",
                       help="one SGLang router per role in front of its workers (python -m sglang_router.launch_router)")
    scale.add_argument("--router-policy", choices=POLICIES, default="cache_aware",
                       help="the routers' policy (default cache_aware: requests that share a prefix go "
                            "to the worker that holds it)")
    return parser


def server_args(args, role: str) -> list:
    """The extra ``sglang.launch_server`` flags of one role's server."""
    extra = []
    tp = getattr(args, f"{role}_tp")
    if tp:
        extra += ["--tp-size", str(tp)]
    if args.mem_fraction_static is not None:
        extra += ["--mem-fraction-static", str(args.mem_fraction_static)]
    if role == BASE:
        for name in SPECULATIVE:
            value = getattr(args, f"base_speculative_{name.replace('-', '_')}")
            if value is not None:
                extra += [f"--speculative-{name}", value]
    for flag in getattr(args, f"{role}_arg"):
        extra += shlex.split(flag)
    return extra


def options(args) -> RuntimeOptions:
    return RuntimeOptions(
        draft_model=args.draft_model, base_model=args.base_model, draft_dtype=args.draft_dtype,
        base_dtype=args.base_dtype, device=args.device, threads=args.threads,
        max_total_tokens=args.max_total_tokens, draft_port=args.draft_port, base_port=args.base_port,
        log_dir=args.log_dir, draft_args=tuple(server_args(args, DRAFT)),
        base_args=tuple(server_args(args, BASE)), draft_gpus=args.draft_gpus, base_gpus=args.base_gpus,
    )


def run(args) -> int:
    if args.draft_url or args.base_url:
        print("error: launch_runtimes starts servers; --draft-url/--base-url are for the other commands",
              file=sys.stderr)
        return 2
    cfg = SpecReasonConfig(seed=args.seed)
    if (args.draft_workers > 1 or args.base_workers > 1) and not args.router:
        print("error: several workers of a role are served through one URL: add --router (one SGLang router "
              "per role in front of its workers)", file=sys.stderr)
        return 2
    if args.router:
        return scale_out(args, cfg)
    if args.dry_run:
        return dry_run(options(args), cfg, (DRAFT, BASE))
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    with open_runtimes(options(args), cfg, (DRAFT, BASE)) as roles:
        print(f"draft: {roles[DRAFT].backend.base_url}\nbase: {roles[BASE].backend.base_url}")
        keep = min(roles[r].backend.keepalive for r in (DRAFT, BASE))  # under what the servers keep
        print(f"use them: sgl-specreason batch --draft-url {roles[DRAFT].backend.base_url} "
              f"--base-url {roles[BASE].backend.base_url} --keep-alive {keep:g} --input problems.jsonl", flush=True)
        print("Ctrl-C or SIGTERM stops both", flush=True)
        try:
            wait_event(stop)  # short waits: see calls.POLL_S
        except KeyboardInterrupt:
            pass
    print("both runtimes stopped")
    return 0


def scale_out(args, cfg) -> int:
    """Several workers per role, and a router per role in front of them."""
    workers = {DRAFT: args.draft_workers, BASE: args.base_workers}
    opts = options(args)
    if opts.threads is None:  # several servers share the cores: one OMP thread each
        opts = dataclasses.replace(opts, threads=1)
    with launch(opts, cfg, workers, args.router_policy, dry_run=args.dry_run) as urls:
        if args.dry_run:
            return 0
        print(f"draft router: {urls[DRAFT]}\nbase router: {urls[BASE]}")
        print(f"use them: sgl-specreason batch --draft-url {urls[DRAFT]} --base-url {urls[BASE]} "
              "--input problems.jsonl", flush=True)
        print("Ctrl-C or SIGTERM stops everything", flush=True)
        stop = threading.Event()
        signal.signal(signal.SIGTERM, lambda *_: stop.set())
        try:
            wait_event(stop)
        except KeyboardInterrupt:
            pass
    print("workers and routers stopped")
    return 0


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    return guarded(lambda: run(args), "interrupted; runtimes stopped")


if __name__ == "__main__":
    sys.exit(main())
