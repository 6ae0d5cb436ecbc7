"""Decode and prefill times of a model's *layer shapes* on one GPU, measured with plain PyTorch:
a check of the planning figures in a costs file, not a serving measurement.

    python eval/hardware/measure_layers.py --out measured.json            # both shapes below
    python eval/hardware/measure_layers.py --models qwq-32b --context 4096
    python eval/hardware/measure_layers.py --forks 1 2 3 4     # n drafts decoded as one batch

Each model is a stand-in with the real architecture's shapes (Qwen2: hidden size, layers,
attention and KV heads, MLP width, vocabulary; bf16) and random weights: at batch 1 a decode
step's time depends on the bytes and shapes it reads, not on the values. One step is captured
as a CUDA graph, as SGLang does for decoding, and replayed; a prefill of T new tokens on a
cached prefix is captured and timed the same way; ``--forks`` also times a decode step of
several sequences at once (n drafts forked from one prefix decode as one batch). Left out, so the figures are a floor for a
server: rotary embeddings, sampling, the scheduler, HTTP and tokenization (a costs file's
``request_ms``). Needs only torch and a CUDA GPU.
"""

from __future__ import annotations

import argparse
import json
import sys

import torch
import torch.nn.functional as F

#: the architectures of the projection's pair (model cards: Qwen2.5-1.5B / Qwen2.5-32B shapes)
SHAPES = {
    "r1-distill-qwen-1.5b": dict(hidden=1536, layers=28, heads=12, kv_heads=2, inter=8960, vocab=151936),
    "qwq-32b": dict(hidden=5120, layers=64, heads=40, kv_heads=8, inter=27648, vocab=152064),
}
HEAD_DIM = 128


def rms_norm(x, weight, eps=1e-6):
    return x * torch.rsqrt(x.float().pow(2).mean(-1, keepdim=True) + eps).to(x.dtype) * weight


class StandIn:
    """A Qwen2-shaped decoder with random bf16 weights and a static KV cache."""

    def __init__(self, shape: dict, max_context: int, batch: int = 1):
        self.shape = shape
        d, h, kv = shape["hidden"], shape["heads"], shape["kv_heads"]

        def weight(*size):
            return torch.empty(*size, dtype=torch.bfloat16, device="cuda").normal_(0, 0.02)

        self.embed, self.lm_head = weight(shape["vocab"], d), weight(shape["vocab"], d)
        self.norm = torch.ones(d, dtype=torch.bfloat16, device="cuda")
        self.layers = [dict(
            qkv=weight((h + 2 * kv) * HEAD_DIM, d), qkv_bias=weight((h + 2 * kv) * HEAD_DIM),
            o=weight(d, h * HEAD_DIM), gate_up=weight(2 * shape["inter"], d), down=weight(d, shape["inter"]),
            norm1=self.norm.clone(), norm2=self.norm.clone(),
            k=torch.zeros(batch, kv, max_context, HEAD_DIM, dtype=torch.bfloat16, device="cuda"),
            v=torch.zeros(batch, kv, max_context, HEAD_DIM, dtype=torch.bfloat16, device="cuda"),
        ) for _ in range(shape["layers"])]
        self.parameters = sum(t.numel() for t in (self.embed, self.lm_head)) + sum(
            t.numel() for layer in self.layers for key, t in layer.items() if key not in ("k", "v"))

    def forward(self, ids: torch.Tensor, position: int) -> torch.Tensor:
        """Logits of the last of ``ids`` ([sequences, new tokens]), written to the cache after
        ``position``."""
        h, kv, (b, n) = self.shape["heads"], self.shape["kv_heads"], ids.shape
        x = self.embed[ids]
        for layer in self.layers:
            qkv = F.linear(rms_norm(x, layer["norm1"]), layer["qkv"], layer["qkv_bias"])
            q, k, v = qkv.split([h * HEAD_DIM, kv * HEAD_DIM, kv * HEAD_DIM], dim=-1)
            q = q.view(b, n, h, HEAD_DIM).transpose(1, 2)
            layer["k"][:b, :, position:position + n] = k.view(b, n, kv, HEAD_DIM).transpose(1, 2)
            layer["v"][:b, :, position:position + n] = v.view(b, n, kv, HEAD_DIM).transpose(1, 2)
            keys = layer["k"][:b, :, :position + n].repeat_interleave(h // kv, dim=1)
            values = layer["v"][:b, :, :position + n].repeat_interleave(h // kv, dim=1)
            attended = F.scaled_dot_product_attention(q, keys, values)
            x = x + F.linear(attended.transpose(1, 2).reshape(b, n, h * HEAD_DIM), layer["o"])
            gate, up = F.linear(rms_norm(x, layer["norm2"]), layer["gate_up"]).chunk(2, dim=-1)
            x = x + F.linear(F.silu(gate) * up, layer["down"])
        return F.linear(rms_norm(x[:, -1:], self.norm), self.lm_head)


def graph_ms(model: StandIn, new_tokens: int, position: int, replays: int, sequences: int = 1) -> float:
    """Milliseconds of one forward of ``new_tokens`` after ``position`` cached ones, for
    ``sequences`` at once, as a CUDA graph replay (the median of ``replays``)."""
    ids = torch.randint(0, model.shape["vocab"], (sequences, new_tokens), device="cuda")
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):  # warm-up outside the graph, as capture requires
        for _ in range(3):
            model.forward(ids, position)
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        model.forward(ids, position)
    times = []
    for _ in range(replays):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        graph.replay()
        end.record()
        torch.cuda.synchronize()
        times.append(start.elapsed_time(end))
    del graph
    return sorted(times)[len(times) // 2]


def measure(name: str, context: int, prefill_tokens, replays: int, forks=()) -> dict:
    model = StandIn(SHAPES[name], context + max(prefill_tokens) + 8, max((1, *forks)))
    with torch.no_grad():
        out = {"parameters": model.parameters,
               "weight_gb": 2 * model.parameters / 1e9,
               "context": context,
               "decode_ms_per_token": graph_ms(model, 1, context, replays)}
        for n in prefill_tokens:
            total = graph_ms(model, n, context, max(5, replays // 5))
            out[f"prefill_{n}_ms"] = total
            out[f"prefill_{n}_ms_per_token"] = total / n
        for b in forks:  # b drafts forked from one prefix, one decode step of all of them
            out[f"decode_{b}_forks_ms"] = graph_ms(model, 1, context, replays, sequences=b)
    out["bandwidth_tb_s_at_decode"] = out["weight_gb"] / out["decode_ms_per_token"]  # GB/ms = TB/s
    del model
    torch.cuda.empty_cache()
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=list(SHAPES), choices=list(SHAPES))
    parser.add_argument("--context", type=int, default=1024, help="cached tokens before the step")
    parser.add_argument("--prefill", type=int, nargs="+", default=[64, 512], help="new tokens per prefill")
    parser.add_argument("--replays", type=int, default=50)
    parser.add_argument("--forks", type=int, nargs="*", default=[], help="also time one decode step "
                        "of this many sequences at once (e.g. 1 2 3 4)")
    parser.add_argument("--out", help="write the figures here as JSON too")
    args = parser.parse_args(argv)
    if not torch.cuda.is_available():
        print("error: needs a CUDA GPU (torch.cuda.is_available() is False)", file=sys.stderr)
        return 2
    result = {"device": torch.cuda.get_device_name(0), "torch": torch.__version__,
              "method": "Qwen2-shaped stand-in, random bf16 weights, CUDA graph replays, median; "
                        "no rotary, sampling, scheduler or HTTP",
              "models": {}}
    for name in args.models:
        result["models"][name] = measure(name, args.context, args.prefill, args.replays, args.forks)
        print(name, json.dumps(result["models"][name]), flush=True)
    if args.out:
        with open(args.out, "w", encoding="utf-8") as handle:
            json.dump(result, handle, indent=2)
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
