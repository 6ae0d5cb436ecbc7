"""What the simulated runtimes cost: fitted to this CPU, or an H100 roofline.

**CPU pair** (``cpu_costs``), three measured sources and nothing tuned per level:
1. A runtime alone: every call that ran while no other problem of its run was in flight (the
   concurrency-1 runs, where the two runtimes take turns, and a loaded run's tail once one
   problem is left): its wall time against its new prompt tokens, its whole prompt and its
   tokens generated, by non-negative least squares,
   ``p0 + p1·new + pp·prompt + d1·(out − 1) + dc·(out − 1)·(prompt + out/2)``: the prefill and
   the decode step of a batch of one, each growing with the context it reads. On this CPU the
   context terms are large: a judge's 55 new tokens on an 8,000-token solution took the base
   runtime 48 s, on a 3,000-token one 10 s. (A term in new × prompt, tried beside these, took
   nothing off the residuals.)
2. SGLang's own decode moments under load (``/v1/loads``, summed over the loaded runs): the
   step time against the batch size, by least squares, ``t = α' + β'·b``, at the mean context
   ``C`` the loaded runs' decode tokens read (from their records).
3. Under load a step is slower than alone by ``1 + κ = (α' + β') / (d1 + dc·C)``, the loaded
   fit read at a batch of one against the runtime alone at the same context; what a batch adds
   per request beyond its context is ``β'/(1 + κ) − dc·C`` (at least 0). The slowdown is not
   only the other runtime's: under ``never``, the draft idle, SGLang's own step times at 8 and
   16 problems at once are as slow as under ``always``. A runtime holding several requests
   shares the two cores and the memory bandwidth with the processes that serve them (HTTP,
   tokenizing, detokenizing, the client), so the simulator applies it to every iteration that
   does not run alone (``engine``).
4. A prefill slows down under load more than a decode step: SGLang's own prefill busy time of
   each loaded run (``prefill_busy_s``) against what the alone fit gives for its prefills that
   did not run alone gives ``1 + κp`` (``prefill_slowdown``), applied to a prefill iteration that
   does not run alone.

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
from typing import Collection, Dict, Iterable, Optional, Sequence, Tuple

import numpy as np
from scipy.optimize import nnls

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


def call_terms(call: dict) -> tuple:
    """A call's terms in the alone model: (1, new prompt tokens, prompt tokens, tokens out − 1,
    the context those decode steps read in all: (out − 1)·(prompt + out/2))."""
    prompt, out = call["prompt_tokens"], call["completion_tokens"]
    steps = max(0, out - 1)
    return 1.0, prompt - call["cached_tokens"], prompt, steps, steps * (prompt + out / 2)


def single_request_fit(calls: Iterable[dict]) -> Optional[np.ndarray]:
    """``[p0, p1, pp, d1, dc]``, none negative: a lone call's wall seconds =
    p0 + p1·new + pp·prompt + d1·(out − 1) + dc·(out − 1)·(prompt + out/2) (the k-th token after
    the first reads the prompt and k tokens)."""
    rows = [(*call_terms(c), c["latency_s"]) for c in calls if c.get("latency_s")]
    if len(rows) < 5:
        return None
    a = np.array(rows, float)
    fit, _ = nnls(a[:, :5], a[:, 5])
    return fit


def moments_fit(moments: Dict[str, float]) -> Optional[tuple]:
    """``(α', β')`` of step seconds = α' + β'·batch, from SGLang's decode moment sums."""
    n, sb, st, sbb, sbt = (moments.get(k, 0.0) for k in ("steps", "sum_b", "sum_t_us", "sum_bb", "sum_bt_us"))
    spread = n * sbb - sb * sb
    if n < 3 or spread <= 0:
        return None
    beta = (n * sbt - sb * st) / spread
    return (st - beta * sb) / n / 1e6, beta / 1e6


def calls_of(records: Sequence[dict], role: Optional[str] = None) -> list:
    return [c for r in records for s in r.get("steps") or () for c in s.get("calls") or ()
            if role is None or c["role"] == role]


def alone_calls(records: Sequence[dict], concurrency: int) -> list:
    """The calls of one run made while no other problem of the run was in flight: every call at
    concurrency 1; else those of the steps that began after the others' ends or ended before
    their starts (a step begins where the problem's earlier steps' wall times add up to)."""
    if concurrency == 1:
        return calls_of(records)
    out = []
    for record in records:
        begin = record.get("started_s")
        if begin is None:
            continue
        others = [(o["started_s"], o["ended_s"]) for o in records if o is not record and o.get("started_s") is not None]
        for step in record.get("steps") or ():
            end = begin + step["wall_s"]
            if not any(start < end and ended > begin for start, ended in others):
                out += step.get("calls") or ()
            begin = end
    return out


def decode_context(records: Sequence[dict], role: str) -> float:
    """The mean context a role's generated tokens read in ``records`` (0 if it generated none)."""
    terms = [call_terms(c) for c in calls_of(records, role)]
    tokens = sum(t[3] for t in terms)
    return sum(t[4] for t in terms) / tokens if tokens else 0.0


def prefill_slowdown(fit: Sequence[float], loaded: Sequence[Tuple[dict, Sequence[dict]]], role: str,
                     alone: Collection[int]) -> Optional[float]:
    """``1 + κp``: what SGLang's own counters say the loaded runs' prefills took (``prefill_busy_s``),
    less what the alone fit gives for those that ran alone (``alone``: their calls' ``id``), over
    what it gives for the rest. ``loaded``: each loaded run's counters and records; runs without
    counters count nowhere."""
    measured = predicted = 0.0
    for counters, records in loaded:
        busy = (counters.get(role) or {}).get("prefill_busy_s")
        if not busy:
            continue
        for call in calls_of(records, role):
            cost = float(np.dot(fit[:3], call_terms(call)[:3]))
            if id(call) in alone:
                busy -= cost
            else:
                predicted += cost
        measured += busy
    return max(1.0, measured / predicted) if predicted > 0 else None


def cpu_costs(alone: Sequence[dict], counters: Dict[str, Dict[str, float]],
              loaded: Sequence[Tuple[dict, Sequence[dict]]] = (), request_s: float = 0.0) -> Dict[str, RuntimeCosts]:
    """Each runtime's costs from the calls that ran alone (``alone_calls``), the summed SGLang
    counters of the loaded runs (``counters[role]``) and each loaded run's own counters and
    records (``loaded``: the context their decode steps read, their prefill busy time), as the
    module's docstring says. Without prefill counters a prefill slows down as a decode step does."""
    out = {}
    records = [r for _, recs in loaded for r in recs]
    lone = {id(c) for c in alone}
    for role in (DRAFT, BASE):
        fit = single_request_fit(c for c in alone if c["role"] == role)
        moments = moments_fit(counters.get(role) or {})
        if fit is None or moments is None:
            raise ValueError(f"not enough {role} figures to fit its costs (calls that ran alone, decode moments)")
        p0, p1, pp, d1, dc = (float(x) for x in fit)
        context = decode_context(records, role)
        slowdown = max(1.0, (moments[0] + moments[1]) / (d1 + dc * context))
        per_seq = max(0.0, moments[1] / slowdown - dc * context)
        prefill = prefill_slowdown(fit, loaded, role, lone) or slowdown
        out[role] = RuntimeCosts(decode_fixed=d1 - per_seq, decode_per_seq=per_seq, decode_per_ctx=dc,
                                 prefill_fixed=p0, prefill_per_token=p1, prefill_per_ctx=pp,
                                 request_s=request_s, contention=slowdown - 1, prefill_contention=prefill - 1)
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
