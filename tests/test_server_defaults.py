"""What a local server is started with on each device, and --dry-run, which only prints it."""

import os
import shlex
import sys
from pathlib import Path

import pytest

from sgl_specreason import models, runtime
from sgl_specreason.config import SpecReasonConfig
from sgl_specreason.errors import ConfigError
from sgl_specreason.runner import RuntimeOptions, server_specs
from sgl_specreason.runtime import LOCAL_KEEPALIVE_S, ServerSpec

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))

from launch_runtimes import build_parser, main as launch_main, options  # noqa: E402

#: the README's two-GPU example, with a memory fraction and more speculative-decoding flags
README_GPU_EXAMPLE = [
    "--device", "cuda", "--draft-model", "/models/R1-Distill-Qwen-1.5B", "--draft-gpus", "0",
    "--base-model", "/models/QwQ-32B", "--base-gpus", "1,2", "--base-tp", "2",
    "--base-speculative-algorithm", "EAGLE", "--base-speculative-draft-model-path", "/models/QwQ-32B-eagle",
]


def flag(command, name):
    """The value after ``name`` in a command, or None when the flag is not there."""
    return command[command.index(name) + 1] if name in command else None


def specs_for(argv):
    return server_specs(options(build_parser().parse_args(argv)), SpecReasonConfig(), ("draft", "base"))


def test_cuda_servers_take_the_models_dtype_and_sglangs_pool_sizing():
    specs = specs_for(README_GPU_EXAMPLE + ["--mem-fraction-static", "0.85", "--draft-tp", "1",
                                            "--base-speculative-num-steps", "3", "--threads", "4"])
    base, draft = specs["base"].command(), specs["draft"].command()
    for command in (base, draft):
        assert flag(command, "--dtype") == "auto" and "--max-total-tokens" not in command
        assert "--device" not in command and "--sleep-on-idle" not in command
        assert flag(command, "--mem-fraction-static") == "0.85"
    assert flag(base, "--tp-size") == "2" and flag(draft, "--tp-size") == "1"
    assert flag(base, "--speculative-algorithm") == "EAGLE"
    assert flag(base, "--speculative-draft-model-path") == "/models/QwQ-32B-eagle"
    assert flag(base, "--speculative-num-steps") == "3"
    assert "--speculative-algorithm" not in draft  # token-level speculation is the base server's
    # the environment: the GPUs and the keep-alive; no thread settings on a GPU, even when
    # --threads is given
    keep = {"SGLANG_TIMEOUT_KEEP_ALIVE": str(LOCAL_KEEPALIVE_S)}
    assert specs["base"].environment_changes() == {"CUDA_VISIBLE_DEVICES": "1,2", **keep}
    assert specs["draft"].environment_changes() == {"CUDA_VISIBLE_DEVICES": "0", **keep}
    assert "SGLANG_USE_CPU_ENGINE" not in specs["base"].environment()


def test_cuda_servers_take_what_the_user_gives():
    specs = specs_for(README_GPU_EXAMPLE + ["--base-dtype", "bfloat16", "--max-total-tokens", "65536"])
    base = specs["base"].command()
    assert flag(base, "--dtype") == "bfloat16" and flag(base, "--max-total-tokens") == "65536"
    assert flag(specs["draft"].command(), "--dtype") == "auto"


def test_cpu_defaults_are_unchanged():
    specs = server_specs(RuntimeOptions(device="cpu", threads=2), SpecReasonConfig(seed=3), ("draft", "base"))
    draft, base = specs["draft"].command(), specs["base"].command()
    assert flag(draft, "--dtype") == "bfloat16" and flag(base, "--dtype") == "float32"
    for command in (draft, base):
        assert flag(command, "--max-total-tokens") == "16384" and flag(command, "--device") == "cpu"
        assert "--sleep-on-idle" in command and flag(command, "--random-seed") == "3"
    env = specs["base"].environment_changes()
    assert env["SGLANG_USE_CPU_ENGINE"] == "1" and env["OMP_NUM_THREADS"] == "2"
    assert env["PYTHONPATH"].split(os.pathsep)[0] == str(runtime.CPU_SHIM_DIR)


def test_cpu_servers_pass_the_gpu_flags_through_as_given():
    specs = specs_for(["--device", "cpu", "--threads", "2", "--draft-tp", "1", "--base-tp", "2",
                       "--mem-fraction-static", "0.5", "--base-gpus", "1",
                       "--base-speculative-algorithm", "EAGLE", "--base-speculative-num-draft-tokens", "4"])
    base, draft = specs["base"].command(), specs["draft"].command()
    assert flag(base, "--tp-size") == "2" and flag(draft, "--tp-size") == "1"
    assert flag(base, "--mem-fraction-static") == "0.5" == flag(draft, "--mem-fraction-static")
    assert flag(base, "--speculative-algorithm") == "EAGLE" and flag(base, "--speculative-num-draft-tokens") == "4"
    assert flag(base, "--dtype") == "float32" and flag(base, "--max-total-tokens") == "16384"
    env = specs["base"].environment_changes()
    assert env["CUDA_VISIBLE_DEVICES"] == "1" and env["OMP_NUM_THREADS"] == "2"
    assert "CUDA_VISIBLE_DEVICES" not in specs["draft"].environment_changes()


@pytest.mark.parametrize("gpu, device", [(True, "cuda"), (False, "cpu")])
def test_auto_is_the_device_this_machine_has(monkeypatch, gpu, device):
    monkeypatch.setattr(runtime, "gpu_available", lambda: gpu)
    spec = ServerSpec("/m/x", 30000, role="base")
    assert spec.resolved_device == device
    assert ("--max-total-tokens" in spec.command()) == (device == "cpu")
    assert flag(spec.command(), "--dtype") == ("float32" if device == "cpu" else "auto")


def test_bad_settings_name_their_flag(capsys):
    with pytest.raises(ConfigError, match="--device must be auto, cpu or cuda, got 'gpu'"):
        ServerSpec("/m/x", 30000, device="gpu").command()
    for argv, name in ((["--base-dtype", "fp64"], "--base-dtype"),
                       (["--max-total-tokens", "0"], "--max-total-tokens"),
                       (["--threads", "-1"], "--threads")):
        with pytest.raises(SystemExit):
            build_parser().parse_args(argv)
        assert f"argument {name}" in capsys.readouterr().err


def test_help_says_the_default_of_each_device():
    text = " ".join(build_parser().format_help().split())
    assert "(default: float32 on cpu, auto (the model's own) on cuda)" in text
    assert "(default: 16384 on cpu; on cuda none, SGLang sizes the pool from --mem-fraction-static)" in text
    assert "--dry-run" in text


@pytest.fixture
def nothing_starts(monkeypatch):
    """A dry run that tried to prepare a model or start a server would fail here."""
    def refuse(*args, **kwargs):
        raise AssertionError("a dry run prepared a model or started a server")

    monkeypatch.setattr(models, "resolve", refuse)
    monkeypatch.setattr(runtime.LocalServer, "start", refuse)


def test_dry_run_of_the_readme_gpu_example_prints_both_commands(nothing_starts, capsys):
    assert launch_main(README_GPU_EXAMPLE + ["--dry-run", "--draft-port", "30001", "--base-port", "30000"]) == 0
    lines = capsys.readouterr().out.splitlines()
    commands = {line.split("--port ")[1].split()[0]: line for line in lines if not line.startswith("#")}
    base = shlex.split(commands["30000"])
    assert base[0] == "CUDA_VISIBLE_DEVICES=1,2" and flag(base, "--model-path") == "/models/QwQ-32B"
    assert "float32" not in base and "--max-total-tokens" not in base and flag(base, "--tp-size") == "2"
    assert shlex.split(commands["30001"])[0] == "CUDA_VISIBLE_DEVICES=0"
    assert "no --max-total-tokens, no thread settings" in lines[0]


def test_scale_out_dry_run_prints_the_workers_and_one_router_per_role(nothing_starts, capsys):
    assert launch_main(["--draft-workers", "2", "--base-workers", "3", "--router", "--dry-run"]) == 0
    lines = capsys.readouterr().out.splitlines()
    workers = [line for line in lines if "sglang.launch_server" in line]
    routers = [shlex.split(line) for line in lines if "sglang_router.launch_router" in line]
    assert len(workers) == 5 and len(routers) == 2
    assert [len(r[r.index("--worker-urls") + 1:r.index("--policy")]) for r in routers] == [2, 3]
    assert {flag(r, "--policy") for r in routers} == {"cache_aware"}
    assert flag(routers[0], "--prometheus-port") != flag(routers[1], "--prometheus-port")


def test_several_workers_without_a_router_are_refused(nothing_starts, capsys):
    assert launch_main(["--base-workers", "2", "--dry-run"]) == 2
    assert "add --router" in capsys.readouterr().err


def test_dry_run_on_the_cpu_prints_the_cpu_environment(nothing_starts, monkeypatch, capsys):
    monkeypatch.setattr(runtime, "gpu_available", lambda: False)
    from sgl_specreason.cli import main as cli_main

    assert cli_main(["demo", "--dry-run", "--base-url", "http://gpu1:30000", "--parallel", "2"]) == 0
    out = capsys.readouterr().out
    assert "# base: http://gpu1:30000 (given, nothing to start)" in out
    assert "--device auto: no GPU visible" in out
    draft = shlex.split([line for line in out.splitlines() if "sglang.launch_server" in line][0])
    assert "SGLANG_USE_CPU_ENGINE=1" in draft and "OMP_NUM_THREADS=1" in draft  # one thread each with --parallel 2
    assert flag(draft, "--model-path") == "qwen2.5-coder-0.5b"  # printed as given, not prepared
    assert flag(draft, "--dtype") == "bfloat16" and flag(draft, "--max-total-tokens") == "16384"


def test_local_servers_keep_idle_connections_unless_the_environment_says_otherwise(monkeypatch):
    spec = ServerSpec("/models/smollm2", 30001, role="draft", device="cpu")
    monkeypatch.delenv("SGLANG_TIMEOUT_KEEP_ALIVE", raising=False)
    assert spec.keepalive_s == LOCAL_KEEPALIVE_S > 5
    assert spec.environment()["SGLANG_TIMEOUT_KEEP_ALIVE"] == str(LOCAL_KEEPALIVE_S)
    monkeypatch.setenv("SGLANG_TIMEOUT_KEEP_ALIVE", "30")
    assert spec.keepalive_s == 30 and spec.environment_changes()["SGLANG_TIMEOUT_KEEP_ALIVE"] == "30"
    monkeypatch.setenv("SGLANG_TIMEOUT_KEEP_ALIVE", "soon")  # not a number of seconds: ours
    assert spec.keepalive_s == LOCAL_KEEPALIVE_S
