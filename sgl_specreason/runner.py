"""Running programs over many problems: runtimes, concurrency, streaming results, the summary."""

from __future__ import annotations

import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, Iterator, List, Optional, Sequence, TextIO, Tuple

import jsonlines
from sglang.lang.global_config import global_config

from sgl_specreason import models
from sgl_specreason.backend import KEEPALIVE_S, Endpoint, client_keepalive
from sgl_specreason.calls import Role, wait_result
from sgl_specreason.config import SpecReasonConfig
from sgl_specreason.errors import ConfigError
from sgl_specreason.judges import STEP, get_judge
from sgl_specreason.modes import get_mode, program_call, roles_for
from sgl_specreason.problems import BadInput, Problem
from sgl_specreason.rendering import model_template
from sgl_specreason.runtime import DEVICE_DEFAULTS, LocalServer, ServerSpec, free_port
from sgl_specreason.speculation import BASE as BY_POLICY
from sgl_specreason.speculation import FIRST, PROBE_BASE
from sgl_specreason.trace import BASE, DRAFT, ProblemResult, Step, Totals

# run_batch would otherwise "trace" a program to pre-cache its prefix, which executes the
# program's calls to the other runtime. Our prompts are rendered per runtime and cached anyway.
global_config.enable_precache_with_tracing = False



@dataclass
class RuntimeOptions:
    """Where the two runtimes are: URLs to connect to, or models to serve locally."""

    draft_url: Optional[str] = None
    base_url: Optional[str] = None
    draft_model: str = "qwen2.5-coder-0.5b"
    base_model: str = "qwen2.5-coder-1.5b"
    draft_template: Optional[str] = None
    base_template: Optional[str] = None
    #: None: the device's default (``runtime.DEVICE_DEFAULTS``, which says why): on a CPU bf16 for
    #: the draft (it mostly decodes), fp32 for the base (it mostly judges, a prefill); on CUDA the
    #: model's own dtype.
    draft_dtype: Optional[str] = None
    base_dtype: Optional[str] = None
    device: str = "auto"
    threads: Optional[int] = None
    #: None: the device's default (16384 tokens on a CPU; on CUDA SGLang sizes the pool itself)
    max_total_tokens: Optional[int] = None
    draft_port: Optional[int] = None
    base_port: Optional[int] = None
    log_dir: Path = Path("logs")
    api_key: Optional[str] = None
    #: more ``sglang.launch_server`` flags per local server (tensor parallelism, memory fraction,
    #: token-level speculative decoding on the base runtime, ...)
    draft_args: Tuple[str, ...] = ()
    base_args: Tuple[str, ...] = ()
    #: CUDA_VISIBLE_DEVICES per local server ("0", "1,2"); None leaves it as it is
    draft_gpus: Optional[str] = None
    base_gpus: Optional[str] = None
    #: keep-alive HTTP connections to each runtime at most (``Endpoint``'s pool)
    connections: int = 64
    #: seconds an idle connection to a given URL is kept; None: ``KEEPALIVE_S``, under SGLang's
    #: own 5 s (local servers keep theirs longer, and their endpoints know it)
    keepalive_s: Optional[float] = None
    #: where each role's token counts and chat template come from: None, the runtime's tokenizer
    #: folder when it is one here; a folder; or "runtime" (its ``/tokenize``; the chat template
    #: then from the model path when it is a folder here)
    draft_tokenizer: Optional[str] = None
    base_tokenizer: Optional[str] = None


@contextmanager
def open_runtimes(opts: RuntimeOptions, cfg: SpecReasonConfig, roles: Sequence[str] = (DRAFT, BASE),
                  log: Callable[[str], None] = print) -> Iterator[dict]:
    """Connect to the given URLs or start local servers; yields {role name: Role}. Local servers
    are stopped on exit, Ctrl-C included."""
    with ExitStack() as stack:
        out = {}
        servers = {}
        specs = server_specs(opts, cfg, roles, resolve=lambda name: models.resolve(name, log=log))
        if specs:
            log(defaults_note(opts, specs))
        for role, spec in specs.items():
            server = stack.enter_context(_Starting(LocalServer(spec)))
            servers[role] = server
            log(f"starting the {role} runtime: {getattr(opts, f'{role}_model')} ({spec.resolved_dtype}, "
                f"{spec.resolved_device}) on {server.url}, log {server.log_path}")
        for role, server in servers.items():
            server.wait_ready()
            log(f"{role} runtime ready at {server.url} "
                f"({time.monotonic() - server.started_at:.0f} s after its start)")
        for role in roles:
            url = one_url(getattr(opts, f"{role}_url") or servers[role].url, role)
            # a role with a local server has no URL of its own: under what that server keeps
            if role in servers:
                keepalive = client_keepalive(servers[role].spec.keepalive_s)
            else:
                keepalive = opts.keepalive_s or KEEPALIVE_S
            backend = Endpoint(url, role=role, timeout=cfg.request_timeout, api_key=opts.api_key,
                               retries=cfg.request_retries, connections=opts.connections,
                               tokenizer=getattr(opts, f"{role}_tokenizer"), keepalive=keepalive)
            if role == BASE and get_judge(cfg.score_method).asks == STEP:
                backend.prepare_tokenizer()  # loaded and checked before any clock starts
                if backend.tokenizer_note:
                    log(f"{role} runtime at {url}: the judge's token counts come from its "
                        f"/tokenize, since {backend.tokenizer_note}")
            out[role] = Role(role, backend, model_template(
                role, backend.model_path, getattr(opts, f"{role}_template"), getattr(opts, f"{role}_tokenizer"),
                backend.model_info.get("tokenizer_path")))
        yield out


@contextmanager
def session(opts: RuntimeOptions, cfg: SpecReasonConfig, mode: str,
            log: Callable[[str], None] = print) -> Iterator[dict]:
    """What every command that runs programs opens: the runtimes ``mode`` needs
    (``open_runtimes``), after one line on the rule a judged mode keeps drafted steps by, and
    one line per runtime once they are up. Yields {role name: Role}."""
    if get_mode(mode).judged:
        first = (f"; the base model writes the first {cfg.first_n_base_steps} step(s)"
                 if cfg.first_n_base_steps else "")
        policy = "" if cfg.speculate == "always" else f"; speculate: {cfg.speculate}"
        log(f"judge: {cfg.score_method} score >= {cfg.threshold:g} keeps a drafted step{first}{policy}")
    with open_runtimes(opts, cfg, roles_for(mode), log) as roles:
        for role in roles.values():
            log(f"{role.name}: {role.backend.model_path} at {role.backend.base_url} "
                f"(template {role.template.name})")
        yield roles


def server_specs(opts: RuntimeOptions, cfg: SpecReasonConfig, roles: Sequence[str],
                 resolve: Callable[[str], str] = str) -> Dict[str, ServerSpec]:
    """The local server of each of ``roles`` that has no URL; ``resolve`` turns a model name into
    its folder (``models.resolve`` prepares it; the default keeps the name as given)."""
    return {role: role_server(opts, cfg, role, getattr(opts, f"{role}_port") or free_port(), resolve)
            for role in roles if not getattr(opts, f"{role}_url")}


def role_server(opts: RuntimeOptions, cfg: SpecReasonConfig, role: str, port: int,
                resolve: Callable[[str], str] = str) -> ServerSpec:
    """A local SGLang server of ``role`` on ``port``, as ``opts`` sets that role's servers."""
    return ServerSpec(
        model_path=resolve(getattr(opts, f"{role}_model")), port=port, role=role, device=opts.device,
        dtype=getattr(opts, f"{role}_dtype"), max_total_tokens=opts.max_total_tokens,
        threads=opts.threads, seed=cfg.seed, log_dir=opts.log_dir,
        extra_args=list(getattr(opts, f"{role}_args")), gpus=getattr(opts, f"{role}_gpus"),
    )


def defaults_note(opts: RuntimeOptions, specs: Dict[str, ServerSpec]) -> str:
    """One line: the device the local servers run on, the defaults they take, and why."""
    first = next(iter(specs.values()))
    device = first.resolved_device
    defaults = DEVICE_DEFAULTS[device]
    how = f"--device {opts.device}"
    if opts.device == "auto":
        how += ": a GPU is visible" if device == "cuda" else ": no GPU visible"
    taken = [f"{role} dtype {spec.resolved_dtype}" for role, spec in specs.items() if spec.dtype is None]
    if opts.max_total_tokens is None:
        taken.append(f"--max-total-tokens {defaults.max_total_tokens}" if defaults.max_total_tokens
                     else "no --max-total-tokens")
    if defaults.sets_threads:
        taken.append(f"OMP_NUM_THREADS={first.threads}" if first.threads else "OMP threads as torch picks")
    else:
        taken.append("no thread settings")
    return f"local servers on {device} ({how}), defaults: {', '.join(taken)}. Why: {defaults.why}"


def dry_run(opts: RuntimeOptions, cfg: SpecReasonConfig, roles: Sequence[str],
            log: Callable[[str], None] = print) -> int:
    """Print what ``open_runtimes`` would start, and start nothing: each local server's command
    line with its environment changes in front. No model is prepared: a model name is printed
    as given (a real run resolves it to its converted folder)."""
    specs = server_specs(opts, cfg, roles)
    for role in roles:
        if role not in specs:
            log(f"# {role}: {getattr(opts, f'{role}_url')} (given, nothing to start)")
    if specs:
        log("# " + defaults_note(opts, specs))
    for role, spec in specs.items():
        port = "" if getattr(opts, f"{role}_port") else f" (a free port now; --{role}-port fixes it)"
        log(f"# {role} server, port {spec.port}{port}, log {Path(spec.log_dir) / f'{role}-{spec.port}.log'}")
        log(spec.shell_line())
    return 0


def flush_caches(roles: dict) -> None:
    """Empty the radix cache of the runtime of every role."""
    for role in roles.values():
        role.backend.flush_cache()


def one_url(value: str, role: str) -> str:
    """The URL of a role's runtime: one server, or SGLang's router in front of several. Several
    URLs are refused with the way to serve them.

    >>> one_url(" http://a:30000 ", "base")
    'http://a:30000'
    """
    urls = [u.strip() for u in value.split(",") if u.strip()]
    if not urls:
        raise ConfigError(f"no URL in --{role}-url {value!r}")
    if len(urls) > 1:
        raise ConfigError(f"--{role}-url takes one URL, got {len(urls)} ({value}): put SGLang's router in front "
                          f"of several workers (scripts/launch_runtimes.py --{role}-workers {len(urls)} --router, "
                          "or python -m sglang_router.launch_router --worker-urls ...) and pass its URL")
    return urls[0]


class _Starting:
    """Start on enter (without waiting, so two servers load at once), stop on exit."""

    def __init__(self, server: LocalServer):
        self.server = server

    def __enter__(self) -> LocalServer:
        self.server.start()
        return self.server

    def __exit__(self, *exc) -> None:
        self.server.stop()


#: Set once Ctrl-C or SIGTERM has begun to stop the local servers (``flags.guarded``). A problem
#: that ends after that failed because its server went away, not because of anything a rerun
#: should know: its result is neither written nor shown, and a rerun solves it again.
stopping = threading.Event()


#: why a step was not drafted, as a step line says it
WHY_NOT_DRAFTED = {FIRST: " (first)", BY_POLICY: " (cheaper now)", PROBE_BASE: " (probe)"}


class Monitor:
    """Receives each step and each finished problem from the programs (any thread): prints
    progress and appends every result to the results file as soon as it is done (open the
    writer with ``flush=True`` so that a killed run loses nothing it finished)."""

    def __init__(self, writer: Optional[jsonlines.Writer] = None, stream: Optional[TextIO] = sys.stdout,
                 show_steps: bool = True):
        self.writer = writer
        self.stream = stream
        self.show_steps = show_steps
        self.lock = threading.Lock()
        self.results: List[ProblemResult] = []

    def _print(self, text: str) -> None:
        if self.stream is not None:
            print(text, file=self.stream, flush=True)

    def on_step(self, problem: Problem, step: Step) -> None:
        if not self.show_steps:
            return
        if step.score is None:
            verdict = f"{step.source} writes" + WHY_NOT_DRAFTED.get(step.choice, "")
        else:
            verdict = f"score {step.score:.2f} " + ("accepted" if step.source == DRAFT else "-> base rewrites")
        text = " ".join(step.text.split())
        with self.lock:
            self._print(f"[{problem.id} step {step.index}] {verdict:<26} {step.kept_tokens:>4} tok "
                        f"{step.wall_s:6.2f} s | {text[:90]}")

    def record(self, result: ProblemResult) -> dict:
        """The JSON line written for a result (subclasses add fields)."""
        return result.to_dict()

    def close(self) -> None:
        """Called once the run is over (subclasses close what they opened)."""

    def on_result(self, result: ProblemResult) -> None:
        if not stopping.is_set():
            self.take(result)

    def take(self, result: ProblemResult) -> None:
        """Record a finished problem (subclasses add to this)."""
        with self.lock:
            self.results.append(result)
            if self.writer is not None:
                self.writer.write(self.record(result))
            mark = {True: "correct", False: "wrong", None: "-"}[result.correct]
            status = f"error: {result.error}" if result.error else f"answer {result.answer!r} ({mark})"
            self._print(f"[{result.id}] {result.mode} done in {result.wall_s:.1f} s, "
                        f"{len(result.steps)} steps, stop {result.stop_reason}: {status}")
            if result.steps and all(step.choice == FIRST for step in result.steps):
                self._print(f"[{result.id}] nothing was drafted: the base model's first "
                            f"{'step was' if len(result.steps) == 1 else 'steps were'} the whole "
                            "solution (--first-n-base-steps)")


def run_problems(problems: Sequence[Problem], cfg: SpecReasonConfig, roles: dict, mode: str,
                 monitor: Monitor, parallel: int = 1) -> List[ProblemResult]:
    """Solve ``problems`` in ``mode`` with ``run_batch``; results in input order."""
    if not problems:
        return []
    calls = [program_call(mode, p, cfg, roles, monitor) for p in problems]
    program, _, backend = calls[0]
    # Off the main thread: run_batch waits for its workers without a timeout, which would hold
    # Ctrl-C and SIGTERM off until every problem in flight is done (calls.POLL_S).
    with ThreadPoolExecutor(1, thread_name_prefix="specreason-batch") as pool:
        states = wait_result(pool.submit(program.run_batch, [arguments for _, arguments, _ in calls],
                                         backend=backend, num_threads=parallel))
    return [state.ret_value for state in states]


def summary(results: Sequence[ProblemResult], mode: str, task: str, latency: float,
            bad: Sequence[BadInput] = ()) -> dict:
    """One line in SGLang's benchmark style."""
    totals = Totals()
    for result in results:
        totals.merge(result.totals())
    graded = [r for r in results if r.correct is not None]
    errors = [r for r in results if r.error]
    return {
        "task": task,
        "backend": mode,
        "latency": round(latency, 3),
        "accuracy": (sum(r.correct for r in graded) / len(graded)) if graded else None,
        "num_requests": len(results),
        "other": {
            "errors": len(errors) + len(bad),
            "bad_inputs": [b.error for b in bad],
            "acceptance_rate": totals.acceptance_rate,
            "steps": totals.steps,
            "policy_steps": totals.policy_steps,
            "speculated_share": totals.speculated_share,
            "judge_calls": totals.judge_calls,
            "draft_tokens": totals.draft_tokens,
            "base_tokens": totals.base_tokens,
            "kept_draft_tokens": totals.kept_draft_tokens,
            "kept_base_tokens": totals.kept_base_tokens,
            "cache_hit_ratio": {role: totals.cache_hit_ratio(role) for role in (DRAFT, BASE)},
            "server_s": totals.server_s,
            "ms_per_token": {role: totals.ms_per_token(role) for role in (DRAFT, BASE)},
            "judge_s_mean": totals.judge_s_mean,
            "wall_s_per_problem": (sum(r.wall_s for r in results) / len(results)) if results else None,
        },
    }


def print_summary(line: dict, stream: TextIO = sys.stdout) -> None:
    o = line["other"]

    def pct(x):
        return "-" if x is None else f"{100 * x:.1f}%"

    def ms(x):
        return "-" if x is None else f"{x:.0f} ms"

    acc = line["accuracy"]
    # "errors" counts failed problems and skipped bad input lines together (the exit code)
    skipped = len(o.get("bad_inputs", ()))
    failed = o["errors"] - skipped
    problems = f"{line['num_requests']} run ({line['num_requests'] - failed} answered, {failed} failed)"
    if skipped:
        problems += f"; {skipped} bad input lines skipped"
    rows = [
        ("mode", line["backend"]),
        ("problems", problems),
        ("accuracy", "-" if acc is None else f"{100 * acc:.1f}%"),
        ("wall time", f"{line['latency']:.1f} s"),
        ("acceptance", f"{pct(o['acceptance_rate'])} of {o['steps']} steps "
                       f"({o['judge_calls']} judge calls)"),
        ("speculation", f"{pct(o['speculated_share'])} of the {o['policy_steps']} steps the policy "
                        "chose for were drafted and judged"),
        ("tokens", f"draft {o['draft_tokens']} written / {o['kept_draft_tokens']} kept, "
                   f"base {o['base_tokens']} written / {o['kept_base_tokens']} kept"),
        ("cache hits", f"draft {pct(o['cache_hit_ratio'][DRAFT])}, base {pct(o['cache_hit_ratio'][BASE])}"),
        ("server time", f"draft {o['server_s'][DRAFT]:.1f} s, base {o['server_s'][BASE]:.1f} s"),
        ("per token", f"draft {ms(o['ms_per_token'][DRAFT])}, base {ms(o['ms_per_token'][BASE])}; "
                      f"judge call {ms(o['judge_s_mean'] and 1000 * o['judge_s_mean'])} mean"),
    ]
    for key, value in rows:
        print(f"  {key:<12} {value}", file=stream)
    for bad in o["bad_inputs"]:
        print(f"  bad input    {bad}", file=stream)
