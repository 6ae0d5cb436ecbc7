"""Scale-out on SGLang's router: several SGLang workers per role behind one
``python -m sglang_router.launch_router`` each (the ``sglang-router`` package).

The router's ``cache_aware`` policy keeps requests that share a prefix on the worker that holds
it, which is what SpecReason needs: every request of a problem extends the last. Everything the
programs send goes through the router's URL like any runtime's; two things the router does not
forward are sent to its workers instead (``Endpoint`` asks the router for them, ``GET
/workers``): ``/abort_request`` (SGLang issue #6531), so that a run's aborts reach the worker
that runs the request, and ``/tokenize``.

``launch`` starts the workers and the routers of the roles asked for and stops them all on exit:

    with launch(opts, cfg, {"draft": 2, "base": 2}, policy="cache_aware") as urls:
        print(urls["base"])          # the base role's router
"""

from __future__ import annotations

import importlib.util
import json
import os
import shlex
import sys
import urllib.request
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, Iterator, List, Tuple

from sgl_specreason import models
from sgl_specreason.errors import RuntimeStartError
from sgl_specreason.runner import role_server
from sgl_specreason.runtime import LocalServer, ServerSpec, free_port

#: the router's policies (``--policy`` of ``sglang_router.launch_router``)
POLICIES = ("cache_aware", "round_robin", "random", "power_of_two")


@dataclass(frozen=True)
class RouterSpec:
    """How to launch SGLang's router in front of one role's workers (started and stopped like a
    server: ``runtime.LocalServer``)."""

    worker_urls: Tuple[str, ...]
    port: int
    role: str = "runtime"
    policy: str = "cache_aware"
    host: str = "127.0.0.1"
    log_dir: Path = Path("logs")
    #: where the router exports its Prometheus metrics: a free port of its own (the router's
    #: default, 29000, is shared by every router on the host, so a second one would not start)
    metrics_port: int = field(default_factory=free_port)

    @property
    def what(self) -> str:
        return f"{self.role} router"

    @property
    def log_name(self) -> str:
        return f"{self.role}-router-{self.port}.log"

    def check(self) -> None:
        if importlib.util.find_spec("sglang_router") is None:
            raise RuntimeStartError("SGLang's router is not installed: pip install sglang-router "
                                    "(the project's own install brings it)")
        if self.policy not in POLICIES:
            raise RuntimeStartError(f"router policy must be one of {', '.join(POLICIES)}, got {self.policy!r}")

    def ready(self, url: str) -> bool:
        """The router lists every one of its workers as healthy (its ``/health`` answers before
        it has checked them all)."""
        try:
            with urllib.request.urlopen(url + "/workers", timeout=5) as resp:
                listed = json.loads(resp.read()).get("workers") or []
        except Exception:
            return False
        healthy = {w.get("url", "").rstrip("/") for w in listed if w.get("is_healthy")}
        return healthy >= {u.rstrip("/") for u in self.worker_urls}

    def command(self) -> List[str]:
        return [sys.executable, "-m", "sglang_router.launch_router", "--host", self.host,
                "--port", str(self.port), "--worker-urls", *self.worker_urls, "--policy", self.policy,
                "--log-level", "warn", "--prometheus-host", self.host,
                "--prometheus-port", str(self.metrics_port)]

    def environment_changes(self) -> Dict[str, str]:
        return {}

    def environment(self) -> dict:
        return dict(os.environ)

    def shell_line(self) -> str:
        return shlex.join(self.command())


def worker_specs(opts, cfg, role: str, count: int, resolve: Callable[[str], str] = str) -> List[ServerSpec]:
    """``count`` SGLang workers of one role (``runner.role_server``), each on a free port."""
    return [role_server(opts, cfg, role, free_port(), resolve) for _ in range(count)]


@contextmanager
def launch(opts, cfg, workers: Dict[str, int], policy: str = "cache_aware",
           log: Callable[[str], None] = print, dry_run: bool = False) -> Iterator[Dict[str, str]]:
    """Start ``workers[role]`` SGLang workers per role and one router per role in front of them;
    yields each role's router URL. Everything is stopped on exit. ``dry_run``: print every
    command line, start nothing."""
    resolve = str if dry_run else (lambda name: str(models.resolve(name, log=log)))
    specs = {role: worker_specs(opts, cfg, role, count, resolve) for role, count in workers.items()}
    routers = {role: RouterSpec(tuple(f"http://{s.host}:{s.port}" for s in group), free_port(), role,
                                policy, log_dir=opts.log_dir) for role, group in specs.items()}
    if dry_run:
        for role, group in specs.items():
            for spec in group:
                log(f"# {role} worker, port {spec.port}, log {Path(spec.log_dir) / spec.log_name}")
                log(spec.shell_line())
            log(f"# {role} router ({policy}), port {routers[role].port}")
            log(routers[role].shell_line())
        yield {role: f"http://127.0.0.1:{routers[role].port}" for role in specs}
        return
    with ExitStack() as stack:
        started = []
        for role, group in specs.items():
            for spec in group:
                server = LocalServer(spec)
                stack.callback(server.stop)
                server.start()
                started.append(server)
                log(f"starting {spec.what} on {server.url}, log {server.log_path}")
        for server in started:
            server.wait_ready()
        urls = {}
        for role, group in specs.items():
            front = LocalServer(routers[role])
            stack.callback(front.stop)
            front.start()
            front.wait_ready(timeout=120)
            urls[role] = front.url
            log(f"{role} router ({policy}) at {front.url} in front of {len(group)} workers, log {front.log_path}")
        yield urls
