"""launch_runtimes.py turns its flags into the right sglang.launch_server command per role."""

import sys
from pathlib import Path

from sgl_specreason.runtime import ServerSpec

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))

from launch_runtimes import build_parser, options, server_args  # noqa: E402


def test_gpu_flags_go_to_the_right_server():
    args = build_parser().parse_args([
        "--device", "cuda", "--draft-model", "/m/r1-1.5b", "--base-model", "/m/qwq-32b", "--base-tp", "2",
        "--base-gpus", "1,2", "--draft-gpus", "0", "--mem-fraction-static", "0.85",
        "--base-speculative-algorithm", "EAGLE", "--base-speculative-draft-model-path", "/m/eagle",
        "--base-speculative-num-steps", "3", "--base-arg=--enable-torch-compile", "--draft-arg", "--chunked-prefill-size 4096",
    ])
    assert server_args(args, "base") == [
        "--tp-size", "2", "--mem-fraction-static", "0.85", "--speculative-algorithm", "EAGLE",
        "--speculative-draft-model-path", "/m/eagle", "--speculative-num-steps", "3", "--enable-torch-compile"]
    assert server_args(args, "draft") == ["--mem-fraction-static", "0.85", "--chunked-prefill-size", "4096"]
    opts = options(args)
    spec = ServerSpec("/m/qwq-32b", 30001, role="base", device=opts.device, extra_args=list(opts.base_args),
                      gpus=opts.base_gpus)
    command = spec.command()
    assert command[command.index("--model-path") + 1] == "/m/qwq-32b"
    assert command[-3:] == ["--speculative-num-steps", "3", "--enable-torch-compile"]
    assert "--sleep-on-idle" not in command and spec.environment()["CUDA_VISIBLE_DEVICES"] == "1,2"


def test_cpu_servers_keep_the_cpu_flags():
    opts = options(build_parser().parse_args(["--device", "cpu"]))
    spec = ServerSpec("/m/qwen", 30000, role="draft", device="cpu", extra_args=list(opts.draft_args))
    assert "--sleep-on-idle" in spec.command() and spec.environment()["SGLANG_USE_CPU_ENGINE"] == "1"
    assert opts.draft_args == () and opts.base_args == ()
