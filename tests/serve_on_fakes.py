"""``sgl-specreason serve`` on scripted fake runtimes, as a process of its own (``python
serve_on_fakes.py PORT``): what a shutdown test signals. The draft's second step takes 30 s
unless aborted; stopping the local runtimes prints the draft runtime's requests."""

import contextlib
import sys

from fake_runtime import FakeRuntime, fake_roles
from sgl_specreason import flags, runner
from sgl_specreason.cli import main


def slow(kind, steps):
    return 30.0 if kind == "step" and len(steps) >= 1 else 0.0


draft = FakeRuntime("draft", lambda steps, fork: f"d{len(steps)}: a step.", delay=slow)
base = FakeRuntime("base", lambda steps, fork: f"b{len(steps)}: a step!")


@contextlib.contextmanager
def open_fakes(opts, cfg, roles, log=print):
    yield fake_roles(draft, base)


def stop_all():
    print("stopping the local runtimes; draft finishes:", [r.finish.get("type") for r in draft.requests],
          flush=True)


if __name__ == "__main__":
    runner.open_runtimes = open_fakes
    flags.stop_all = stop_all  # what SIGTERM calls once the server has shut down
    sys.exit(main(["serve", "--port", sys.argv[1], "--base-url", "fake", "--draft-url", "fake",
                   "--grace-seconds", "1"]))
