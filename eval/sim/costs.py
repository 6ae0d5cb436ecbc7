"""What the simulated runtimes cost: fitted to this CPU, or an H100 roofline.

**CPU pair** (``cpu_costs``), three measured sources and nothing tuned per level:
1. A runtime alone (the concurrency-1 records, where the two runtimes take turns): each call's
   wall time against its new prompt tokens and its tokens generated, by least squares,
   ``p0 + p1·new + d1·(out − 1)``: the prefill and the decode step of a batch of one.
2. SGLang's own decode moments under load (``/v1/loads``, summed over the loaded runs): the
   step time against the batch size, by least squares, ``t = α' + β'·b``.
3. Under load a step is slower than alone by ``1 + κ = (α' + β') / d1``, the loaded fit read at
   a batch of one against the runtime alone; the step time at batch b alone is then
   ``d1 + β'/(1 + κ)·(b − 1)``. The slowdown is not only the other runtime's: under ``never``,
   the draft idle, SGLang's own step times at 8 and 16 problems at once are as slow as under
   ``always``. A runtime holding several requests shares the two cores and the memory
   bandwidth with the processes that serve them (HTTP, tokenizing, detokenizing, the client),
   so the simulator applies it to every iteration that does not run alone (``engine``).

**H100 pair** (``h100_costs``): QwQ-32B on ``tp`` H100s and R1-Distill-Qwen-1.5B on one, bf16,
pinned to the single-request figures measured on an H100 (``eval/hardware/measured-h100-*.json``):
decode at a batch of one, the per-sequence step growth of the 1.5B model's forks up to 8, the
marginal prefill per token. Beyond what was measured it is a roofline: a decode step reads the
weights once and every running request's KV cache (at the bandwidth measured at decode), and
takes at least the batch's FLOPs at ``FLOPS_EFFECTIVE``; the KV cache holds what the GPUs' memory
leaves beside the weights. A projection, not a measurement.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Dict, Iterable, Optional, Sequence

import numpy as np

from sgl_specreason.trace import BASE, DRAFT

from .engine import RuntimeCosts

HARDWARE = Path(__file__).resolve().parents[1] / "hardware"

#: dense bf16 FLOP/s an H100 sustains in a large decode or prefill GEMM: 60 % of its 989 TF/s
#: peak (an assumption, not measured here)
FLOPS_EFFECTIVE = 0.6 * 989e12
#: HBM per H100, and the share SGLang's static allocation takes by default (mem_fraction_static)
GPU_BYTES, MEM_FRACTION = 80e9, 0.88
#: per step of a model sharded over 2 GPUs: two all-reduces per layer (an assumption, ~15 us each)
ALLREDUCE_S_PER_LAYER = 30e-6
#: what the forks measurement covers; past it the roofline's per-sequence cost applies
FORKS_MEASURED_UP_TO = 8

#: shapes of the two models (Qwen2 architecture): layers, KV heads, head size
SHAPES = {"qwq-32b": (64, 8, 128), "r1-distill-qwen-1.5b": (28, 2, 128)}


def single_request_fit(calls: Iterable[dict]) -> Optional[np.ndarray]:
    """``[p0, p1, d1]``: a call's wall seconds = p0 + p1·new prompt tokens + d1·(tokens out − 1)."""
    rows = [(1.0, c["prompt_tokens"] - c["cached_tokens"], max(0, c["completion_tokens"] - 1), c["latency_s"])
            for c in calls if c.get("latency_s")]
    if len(rows) < 3:
        return None
    a = np.array(rows, float)
    fit, *_ = np.linalg.lstsq(a[:, :3], a[:, 3], rcond=None)
    return fit


def moments_fit(moments: Dict[str, float]) -> Optional[tuple]:
    """``(α', β')`` of step seconds = α' + β'·batch, from SGLang's decode moment sums."""
    n, sb, st, sbb, sbt = (moments.get(k, 0.0) for k in ("steps", "sum_b", "sum_t_us", "sum_bb", "sum_bt_us"))
    spread = n * sbb - sb * sb
    if n < 3 or spread <= 0:
        return None
    beta = (n * sbt - sb * st) / spread
    return (st - beta * sb) / n / 1e6, beta / 1e6


def calls_of(records: Sequence[dict], role: str) -> list:
    return [c for r in records for s in r.get("steps") or () for c in s.get("calls") or () if c["role"] == role]


def cpu_costs(single: Sequence[dict], counters: Dict[str, Dict[str, float]],
              request_s: float = 0.0) -> Dict[str, RuntimeCosts]:
    """Each runtime's costs from the records of runs at concurrency 1 (``single``) and the summed
    SGLang counters of the loaded runs (``counters[role]``), as the module's docstring says."""
    out = {}
    for role in (DRAFT, BASE):
        fit = single_request_fit(calls_of(single, role))
        loaded = moments_fit(counters.get(role) or {})
        if fit is None or loaded is None:
            raise ValueError(f"not enough {role} figures to fit its costs (concurrency-1 calls, decode moments)")
        p0, p1, d1 = (max(0.0, x) for x in fit)
        slowdown = max(1.0, (loaded[0] + loaded[1]) / d1)
        per_seq = max(0.0, loaded[1]) / slowdown
        out[role] = RuntimeCosts(decode_fixed=d1 - per_seq, decode_per_seq=per_seq, decode_per_ctx=0.0,
                                 prefill_fixed=p0, prefill_per_token=p1, request_s=request_s,
                                 contention=slowdown - 1)
    return out


def h100_costs(base_tp: int = 2, max_running: int = 10 ** 6) -> Dict[str, RuntimeCosts]:
    """R1-Distill-Qwen-1.5B drafting on one H100 for QwQ-32B on ``base_tp`` H100s (roofline
    pinned to the measured figures)."""
    layers = json.loads((HARDWARE / "measured-h100-layers.json").read_text())["models"]
    forks = json.loads((HARDWARE / "measured-h100-forks.json").read_text())["models"]["r1-distill-qwen-1.5b"]
    points = sorted((int(k.split("_")[1]), v / 1e3) for k, v in forks.items() if k.endswith("_forks_ms"))
    per_seq = float(np.polyfit([b for b, _ in points], [t for _, t in points], 1)[0])  # s per extra sequence
    out = {}
    for role, name, tp in ((DRAFT, "r1-distill-qwen-1.5b", 1), (BASE, "qwq-32b", base_tp)):
        m = layers[name]
        n_layers, kv_heads, head = SHAPES[name]
        kv_bytes = n_layers * kv_heads * head * 2 * 2  # K and V, bf16, per token
        bandwidth = m["bandwidth_tb_s_at_decode"] * 1e12 * tp
        kv_at_measure = m["context"] * kv_bytes / bandwidth
        # a step at a batch of one reads the weights and the KV cache: split over tp GPUs
        one = m["decode_ms_per_token"] / 1e3 / tp + (ALLREDUCE_S_PER_LAYER * n_layers if tp > 1 else 0.0)
        fixed = one - kv_at_measure - per_seq
        flops_per_token = 2 * m["parameters"]
        marginal = (m["prefill_512_ms"] - m["decode_ms_per_token"]) / 512 / 1e3  # beyond the step
        prefill_per_token = max(marginal / tp, flops_per_token / (FLOPS_EFFECTIVE * tp))
        capacity = int((GPU_BYTES * MEM_FRACTION * tp - m["weight_gb"] * 1e9) / kv_bytes)
        out[role] = RuntimeCosts(decode_fixed=fixed, decode_per_seq=per_seq, decode_per_ctx=kv_bytes / bandwidth,
                                 prefill_fixed=one, prefill_per_token=prefill_per_token, request_s=0.003,
                                 compute_per_seq=flops_per_token / (FLOPS_EFFECTIVE * tp),
                                 kv_capacity=capacity, max_running=max_running,
                                 per_seq_until=FORKS_MEASURED_UP_TO)
    return out
