"""Local SGLang servers as child processes: start, wait for health, keep the log, stop cleanly.

On a machine without a GPU the server runs SGLang's CPU engine (``SGLANG_USE_CPU_ENGINE=1``)
with the stand-in for the CUDA-only ``sgl_kernel`` package first on its PYTHONPATH
(``sgl_specreason/cpu_shim``), a bounded KV pool (``--max-total-tokens``) and
``--sleep-on-idle`` so that an idle server does not spin a core. What a server gets unless told
otherwise depends on its device (``DEVICE_DEFAULTS``).
"""

from __future__ import annotations

import atexit
import os
import shlex
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional

from sgl_specreason.errors import ConfigError, RuntimeStartError

CPU_SHIM_DIR = Path(__file__).resolve().parent / "cpu_shim"

_live: "set[LocalServer]" = set()
_live_lock = threading.Lock()


def gpu_available() -> bool:
    """A CUDA device is visible (checked without importing torch)."""
    return Path("/dev/nvidiactl").exists() or Path("/proc/driver/nvidia/version").exists()


def resolve_device(device: str) -> str:
    """``auto`` is ``cuda`` when a GPU is visible, else ``cpu``; ``cpu`` and ``cuda`` stay."""
    if device == "auto":
        return "cuda" if gpu_available() else "cpu"
    if device not in DEVICE_DEFAULTS:
        raise ConfigError(f"--device must be auto, cpu or cuda, got {device!r}")
    return device


@dataclass(frozen=True)
class DeviceDefaults:
    """What a local server on one device gets unless told otherwise, and why."""

    dtypes: Dict[str, str]  # by role; a role not named gets "auto", the model's own dtype
    max_total_tokens: Optional[int]  # None: no --max-total-tokens, SGLang sizes the pool itself
    sets_threads: bool  # OMP_NUM_THREADS from --threads
    why: str

    def dtype(self, role: str) -> str:
        return self.dtypes.get(role, "auto")


DEVICE_DEFAULTS = {
    # Chosen on a CPU without bf16 hardware (the figures: docs/usage.md, "On a CPU"): bf16 decodes
    # faster, fp32 prefills faster, and the base model judges by prefill.
    "cpu": DeviceDefaults(
        dtypes={"draft": "bfloat16", "base": "float32"}, max_total_tokens=16384, sets_threads=True,
        why="on CPUs without bf16 hardware bf16 decodes faster (the draft) and fp32 prefills 5-9x "
            "faster (the base model judges by prefill); an unbounded CPU KV pool takes ~14.5 GB"),
    # fp32 would double a GPU model's weights, and a fixed token pool sized for a CPU would admit
    # only a few long-budget problems at once: SGLang sizes it from --mem-fraction-static.
    "cuda": DeviceDefaults(
        dtypes={}, max_total_tokens=None, sets_threads=False,
        why="the model's own dtype, as trained (fp32 would double the weights: 128 GB for a 32B "
            "model); SGLang sizes the KV pool from --mem-fraction-static, so long budgets fit"),
}


#: seconds a local server keeps an idle keep-alive connection (SGLang's own default is 5 s):
#: a client thread that waits on the other runtime for longer than 5 s (a base step on a CPU
#: takes 15 s) would otherwise find its connection closed and open a new one
LOCAL_KEEPALIVE_S = 120


@dataclass
class ServerSpec:
    """How to launch one SGLang server. ``dtype`` and ``max_total_tokens`` left None take the
    device's defaults (``DEVICE_DEFAULTS``)."""

    model_path: str
    port: int
    role: str = "runtime"
    device: str = "auto"  # "auto", "cpu" or "cuda"
    dtype: Optional[str] = None
    max_total_tokens: Optional[int] = None
    threads: Optional[int] = None  # OMP_NUM_THREADS for a CPU server
    host: str = "127.0.0.1"
    seed: Optional[int] = None
    context_length: Optional[int] = None
    extra_args: List[str] = field(default_factory=list)
    log_dir: Path = Path("logs")
    gpus: Optional[str] = None  # CUDA_VISIBLE_DEVICES of the server, e.g. "1,2"

    @property
    def resolved_device(self) -> str:
        return resolve_device(self.device)

    @property
    def what(self) -> str:
        """How messages name this server."""
        return f"{self.role} SGLang server"

    @property
    def log_name(self) -> str:
        return f"{self.role}-{self.port}.log"

    def ready(self, url: str) -> bool:
        """The server at ``url`` answers ``/health``."""
        try:
            with urllib.request.urlopen(url + "/health", timeout=5) as resp:
                return resp.status == 200
        except Exception:
            return False

    def check(self) -> None:
        """Fail before starting when the server could not start."""
        if not Path(self.model_path).is_dir():
            raise RuntimeStartError(
                f"{self.role} model folder {self.model_path} does not exist (expected a Hugging "
                "Face model folder with config.json)"
            )

    @property
    def defaults(self) -> DeviceDefaults:
        return DEVICE_DEFAULTS[self.resolved_device]

    @property
    def resolved_dtype(self) -> str:
        return self.dtype or self.defaults.dtype(self.role)

    @property
    def resolved_max_total_tokens(self) -> Optional[int]:
        return self.max_total_tokens or self.defaults.max_total_tokens

    def command(self) -> List[str]:
        cmd = [
            sys.executable, "-m", "sglang.launch_server",
            "--model-path", str(self.model_path),
            "--host", self.host, "--port", str(self.port),
        ]
        if self.resolved_max_total_tokens:
            cmd += ["--max-total-tokens", str(self.resolved_max_total_tokens)]
        cmd += ["--dtype", self.resolved_dtype]
        if self.resolved_device == "cpu":
            cmd += ["--device", "cpu", "--sleep-on-idle"]
        if self.seed is not None:
            cmd += ["--random-seed", str(self.seed)]
        if self.context_length:
            cmd += ["--context-length", str(self.context_length)]
        return cmd + list(self.extra_args)

    def environment_changes(self) -> Dict[str, str]:
        """The variables the server's environment sets on top of ours."""
        changes = {}
        if self.gpus:
            changes["CUDA_VISIBLE_DEVICES"] = self.gpus
        if self.resolved_device == "cpu":
            changes["SGLANG_USE_CPU_ENGINE"] = "1"
            changes["PYTHONPATH"] = os.pathsep.join(
                p for p in (str(CPU_SHIM_DIR), os.environ.get("PYTHONPATH", "")) if p
            )
            if self.threads and self.defaults.sets_threads:
                changes["OMP_NUM_THREADS"] = str(self.threads)
        changes["SGLANG_TIMEOUT_KEEP_ALIVE"] = str(self.keepalive_s)
        return changes

    def environment(self) -> dict:
        return {**os.environ, **self.environment_changes()}

    @property
    def keepalive_s(self) -> int:
        """Seconds the server keeps an idle HTTP connection open: ``LOCAL_KEEPALIVE_S``, or
        ``SGLANG_TIMEOUT_KEEP_ALIVE`` where our environment sets it."""
        given = os.environ.get("SGLANG_TIMEOUT_KEEP_ALIVE", "").strip()
        return int(given) if given.isdigit() and int(given) > 0 else LOCAL_KEEPALIVE_S

    def shell_line(self) -> str:
        """The command as one shell line, its environment changes first.

        >>> ServerSpec("/models/qwq-32b", 30000, role="base", device="cuda", gpus="1,2").shell_line()  # doctest: +ELLIPSIS
        'CUDA_VISIBLE_DEVICES=1,2 ... -m sglang.launch_server --model-path /models/qwq-32b --host 127.0.0.1 --port 30000 --dtype auto'
        """
        env = [f"{name}={shlex.quote(value)}" for name, value in self.environment_changes().items()]
        return " ".join(env + [shlex.join(self.command())])


def port_is_free(port: int, host: str = "127.0.0.1") -> bool:
    """Nothing listens on the port. SO_REUSEADDR as the server's own bind does, so connections
    of a server that just stopped (TIME_WAIT) do not count."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


class LocalServer:
    """One SGLang server child process.

    >>> with LocalServer(ServerSpec("/models/smollm2", 30001, role="draft")) as server:  # doctest: +SKIP
    ...     print(server.url)
    """

    def __init__(self, spec: ServerSpec):
        self.spec = spec
        self.process: Optional[subprocess.Popen] = None
        self.log_path = Path(spec.log_dir) / spec.log_name

    @property
    def url(self) -> str:
        return f"http://{self.spec.host}:{self.spec.port}"

    def __enter__(self) -> "LocalServer":
        self.start()
        try:
            self.wait_ready()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def start(self) -> None:
        spec = self.spec
        spec.check()
        if not port_is_free(spec.port, spec.host):
            raise RuntimeStartError(
                f"port {spec.port} on {spec.host} is already in use; pick another port for the "
                f"{spec.what}, or pass its URL to use the server already there"
            )
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        log = open(self.log_path, "wb")
        # A session of its own: Ctrl-C in the terminal reaches us, and we stop the whole tree.
        self.process = subprocess.Popen(
            spec.command(), env=spec.environment(), stdout=log, stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL, start_new_session=True,
        )
        log.close()
        self.started_at = time.monotonic()
        with _live_lock:
            _live.add(self)

    def log_tail(self, lines: int = 25) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])

    def wait_ready(self, timeout: float = 600.0) -> None:
        """Block until the server is ready (``spec.ready``: ``/health`` answers 200); fail with
        the log's tail if it dies."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            code = self.process.poll()
            if code is not None:
                raise RuntimeStartError(
                    f"the {self.spec.what} exited with code {code} while starting. Last lines of "
                    f"{self.log_path}:\n{self.log_tail()}"
                )
            if self.spec.ready(self.url):
                return
            time.sleep(1.0)
        raise RuntimeStartError(
            f"the {self.spec.what} did not become healthy within {timeout:g} s. "
            f"Last lines of {self.log_path}:\n{self.log_tail()}"
        )

    def stop(self, grace: float = 15.0) -> None:
        """SIGTERM the server's process group, SIGKILL what is left after ``grace`` seconds."""
        proc = self.process
        if proc is None:
            return
        with _live_lock:
            _live.discard(self)
        if proc.poll() is None:
            for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 10.0)):
                try:
                    os.killpg(proc.pid, sig)
                except ProcessLookupError:
                    break
                try:
                    proc.wait(timeout=wait)
                    break
                except subprocess.TimeoutExpired:
                    continue
        # Children (scheduler, detokenizer) share the group; make sure none outlives the parent.
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        self.process = None


def stop_all() -> None:
    with _live_lock:
        servers = list(_live)
    for server in servers:
        server.stop()


atexit.register(stop_all)
