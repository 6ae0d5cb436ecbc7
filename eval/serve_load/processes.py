"""The child processes of the serve load measurement, and what watches them: ``sgl-specreason
serve`` (which starts its two runtimes) on the ports chosen for it, stopped by SIGTERM and then
by PID; the load generator, killed by PID at its timeout; the sampler of serve's memory and
request count; and the two HTTP calls made to serve and the runtimes (``get_json``, ``post``)."""

from __future__ import annotations

import json
import os
import shlex
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import List, Optional, Sequence, Tuple

from sgl_specreason.eval.serve_load.runs import BESIDE, Setup

#: the repository root (the installed package's folder when installed): children run from here
REPO = Path(__file__).resolve().parents[2]


@dataclass
class Ports:
    serve: int
    draft: int
    base: int

    @property
    def serve_url(self) -> str:
        return f"http://127.0.0.1:{self.serve}"

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.base}"

    @property
    def draft_url(self) -> str:
        return f"http://127.0.0.1:{self.draft}"


def batch_data_dir(runs: Sequence, work: Path) -> Optional[Path]:
    """Where serve keeps its batch files when one of ``runs`` runs a batch beside the live
    requests (its batch endpoints are then on), else None."""
    return work / "serve-data" if any(run.kind == BESIDE for run in runs) else None


def serve_command(setup: Setup, ports: Ports, log_dir: Path, max_queue: int,
                  python: str = sys.executable, data_dir: Optional[Path] = None) -> List[str]:
    """``sgl-specreason serve`` under ``setup`` on ``ports``, with its runtimes' logs in ``log_dir``
    (and its batch endpoints on, keeping their files in ``data_dir``, when given)."""
    cmd = [python, "-m", "sgl_specreason.cli", "serve", "--port", str(ports.serve),
           "--draft-model", setup.model, "--base-model", setup.model,
           "--draft-port", str(ports.draft), "--base-port", str(ports.base),
           "--device", setup.device, "--threads", str(setup.threads),
           "--max-total-tokens", str(setup.max_total_tokens), "--log-dir", str(log_dir),
           "--max-in-flight", str(setup.max_in_flight), "--max-queue", str(max_queue),
           "--score-method", setup.judge, "--threshold", f"{setup.threshold:g}",
           "--answer-max-tokens", str(setup.answer_max_tokens), "--seed", str(setup.seed),
           "--grace-seconds", "5"] + (["--data-dir", str(data_dir)] if data_dir is not None else [])
    return cmd + shlex.split(setup.serve_flags)


def get_json(url: str, timeout: float = 5.0) -> Optional[dict]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as reply:
            return json.loads(reply.read())
    except (OSError, ValueError):
        return None


def post(url: str, body: Optional[dict] = None, timeout: float = 30.0) -> Optional[int]:
    data = json.dumps(body or {}).encode()
    request = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"}, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as reply:
            reply.read()
            return reply.status
    except urllib.error.HTTPError as e:
        return e.code
    except OSError:
        return None


class Sampler:
    """A thread that samples serve's resident memory (psutil) and its answered-request count
    (``GET /stats``) every ``every`` seconds, into the current run's list."""

    def __init__(self, pid: int, stats_url: str, every: float = 1.0):
        import psutil

        self.process = psutil.Process(pid)
        self.stats_url = stats_url
        self.every = every
        self.samples: List[Tuple[float, float, Optional[int]]] = []
        self.started = time.monotonic()
        self.lock = threading.Lock()
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._loop, name="serve-load-sampler", daemon=True)
        self.thread.start()

    def _loop(self) -> None:
        while not self.done.wait(self.every):
            self.sample()

    def sample(self) -> None:
        try:
            rss = self.process.memory_info().rss / 2**20
        except Exception:
            return
        stats = get_json(self.stats_url, timeout=2.0)
        answered = stats["requests"]["answered"] if stats else None
        with self.lock:
            self.samples.append((round(time.monotonic() - self.started, 2), round(rss, 1), answered))

    def take(self) -> List[Tuple[float, float, Optional[int]]]:
        """The samples since the last take (a fresh sample last)."""
        self.sample()
        with self.lock:
            out, self.samples = self.samples, []
        return out

    def cpu_seconds(self) -> Optional[float]:
        """User + system CPU seconds serve's own process has used so far (its runtimes aside)."""
        try:
            times = self.process.cpu_times()
        except Exception:
            return None
        return times.user + times.system

    def stop(self) -> None:
        self.done.set()
        self.thread.join(5)


class Serve:
    """``sgl-specreason serve`` as a child process, with the runtimes it starts; ``stop`` ends it
    and then kills, by PID, whatever of its process tree is left."""

    def __init__(self, cmd: Sequence[str], log_path: Path, url: str):
        self.cmd, self.log_path, self.url = list(cmd), log_path, url
        self.process: Optional[subprocess.Popen] = None
        self.tree: list = []  # psutil.Process of each descendant seen

    def start(self) -> None:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH", "")) if p),
               "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(self.cmd, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT,
                                            stdin=subprocess.DEVNULL, start_new_session=True)

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.alive():
                raise RuntimeError(f"serve exited with code {self.process.returncode} while starting; "
                                   f"last lines of {self.log_path}:\n{self.log_tail()}")
            health = get_json(self.url + "/health", timeout=30)
            if health and health.get("status") == "ok":
                self.remember_tree()
                return
            time.sleep(2)
        raise RuntimeError(f"serve was not ready within {timeout:g} s; last lines of {self.log_path}:\n"
                           f"{self.log_tail()}")

    def remember_tree(self) -> None:
        import psutil

        try:
            children = psutil.Process(self.process.pid).children(recursive=True)
        except psutil.Error:
            return
        known = {(p.pid, p.create_time()) for p in self.tree}
        for child in children:
            try:
                if (child.pid, child.create_time()) not in known:
                    self.tree.append(child)
            except psutil.Error:
                pass

    def stop(self, grace: float = 90.0) -> None:
        import psutil

        if self.process is None:
            return
        if self.alive():
            self.remember_tree()
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(grace)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)
        for child in self.tree:  # psutil checks that the PID is still the process seen
            try:
                if child.is_running():
                    child.kill()
            except psutil.Error:
                pass
        psutil.wait_procs(self.tree, timeout=10)


def run_bench(cmd: Sequence[str], log_path: Path, timeout: float) -> Tuple[int, bool]:
    """The load generator as a child process; (exit code, timed out). Killed, by its PID, at the
    timeout or when this script is stopped."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    with open(log_path, "ab") as log:
        log.write(f"\n$ {shlex.join(cmd)}\n".encode())
        log.flush()
        process = subprocess.Popen(list(cmd), cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT,
                                   stdin=subprocess.DEVNULL, start_new_session=True)
        try:
            return process.wait(timeout), False
        except subprocess.TimeoutExpired:
            return -9, True
        finally:
            if process.poll() is None:
                process.kill()
                process.wait(10)
