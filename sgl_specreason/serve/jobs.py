"""A request checked and turned into jobs: one per choice it asks for (``n``, and each prompt of
a completion), each a conversation to solve or a prompt to continue.

What a field cannot mean in a SpecReason run is refused here with a 400 that names it and says
why: a completion is written by two models in many requests (one per step), so what is defined
within one generation of one model (penalties over its own output, a seed, token ids of one
vocabulary) has no faithful meaning there. Such a field is honoured where one request of the
base model serves the whole completion: constrained decoding (``response_format``, ``regex``).
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass, replace
from typing import Callable, List, Optional, Sequence, Tuple, Union

from sgl_specreason.chat import Conversation, conversation
from sgl_specreason.config import SpecReasonConfig
from sgl_specreason.errors import ConfigError, InputError
from sgl_specreason.framing import PAPER
from sgl_specreason.serve.errors import ApiError
from sgl_specreason.serve.reasoning import Thinking
from sgl_specreason.serve.schema import (
    ChatRequest,
    CommonRequest,
    CompletionRequest,
    Message,
)


@dataclass(frozen=True)
class Constraint:
    """Constrained decoding, served by the base runtime alone in one request."""

    regex: Optional[str] = None
    json_schema: Optional[str] = None
    why: str = ""  # the field that asked for it
    #: sampling parameters that one request honours (penalties, stop token ids), as
    #: ``programs.constrained_gen`` takes them
    sampling: Tuple[Tuple[str, object], ...] = ()


@dataclass(frozen=True)
class Job:
    """One run: a conversation to solve, or a prompt to continue; ``index`` is the choice it
    fills in the response ``id``."""

    id: str
    cfg: SpecReasonConfig
    index: int = 0
    #: which prompt of the request it continues (a completion may send several, even the same
    #: one twice; its ``n`` runs share it)
    source: int = 0
    conversation: Optional[Conversation] = None
    prompt: Optional[str] = None
    max_tokens: Optional[int] = None  # a completion's cap (a chat's is cfg.max_completion_tokens)
    stops: Tuple[str, ...] = ()
    trace: bool = False  # include every step and call in the response
    echo: bool = False  # a completion's text begins with its prompt
    #: the base model's log-probabilities of the kept tokens: None (not asked), 0 (each token's
    #: own), k (and its top k alternatives)
    logprobs: Optional[int] = None
    #: with ``echo`` and ``logprobs``: the prompt's tokens as the base model scores them (the
    #: first has none), filled in before the run
    prompt_logprobs: Optional[list] = None
    constraint: Optional[Constraint] = None
    #: how a chat reply's thinking is told from its answer (``reasoning``); None: one content
    #: (a completion, constrained decoding, or ``separate_reasoning`` off)
    thinking: Optional[Thinking] = None

    @property
    def is_chat(self) -> bool:
        return self.conversation is not None


def _text_of(message: Message, i: int) -> str:
    if isinstance(message.content, str):
        return message.content
    if message.content is None:
        raise ApiError(400, f"messages[{i}].content: a message needs text", f"messages[{i}].content")
    texts = []
    for j, part in enumerate(message.content):
        if part.type != "text" or part.text is None:
            param = f"messages[{i}].content[{j}].type"
            raise ApiError(400, f"{param}: only text parts are supported, got {part.type!r}", param)
        texts.append(part.text)
    return "\n".join(texts)


#: why a field that one generation of one model defines cannot be honoured across many steps
MANY_REQUESTS = ("SpecReason writes a completion in many requests (one per step) by two models, so "
                 "it would not act as it does in one generation")
TWO_VOCABULARIES = "token ids belong to one model's vocabulary, and the steps come from two models"


def _constraint(body: CommonRequest) -> Optional[Constraint]:
    """The constrained decoding a request asks for, if any (at most one kind)."""
    asked = []
    fmt = getattr(body, "response_format", None)
    if fmt is not None and fmt.type == "json_object":
        asked.append(Constraint(json_schema=json.dumps({"type": "object"}), why="response_format json_object"))
    if fmt is not None and fmt.type == "json_schema":
        if fmt.json_schema is None or fmt.json_schema.schema_ is None:
            raise ApiError(400, "response_format.json_schema.schema: a json_schema response format needs "
                                "a schema", "response_format.json_schema")
        asked.append(Constraint(json_schema=json.dumps(fmt.json_schema.schema_), why="response_format json_schema"))
    if body.regex is not None:
        asked.append(Constraint(regex=body.regex, why="regex"))
    if body.ebnf is not None:
        raise ApiError(400, "ebnf: not supported; serve reaches the runtimes through SGLang's frontend, "
                            "which takes regex and json_schema constraints only", "ebnf")
    if len(asked) > 1:
        raise ApiError(400, f"{asked[1].why}: one constraint at a time, got {asked[0].why} too",
                       asked[1].why.split()[0])
    return asked[0] if asked else None


def _sampling(body: CommonRequest, routed: bool) -> Tuple[Tuple[str, object], ...]:
    """The sampling fields beyond temperature and top-p a request sets: passed on when one base
    request serves it (``routed``), refused otherwise."""
    out = []
    for name, value, default in (("frequency_penalty", body.frequency_penalty, 0.0),
                                 ("presence_penalty", body.presence_penalty, 0.0)):
        if value not in (None, default):
            if not routed:
                raise ApiError(400, f"{name}: a penalty counts the tokens one request has written; "
                                    f"{MANY_REQUESTS}. It is honoured with constrained decoding "
                                    "(response_format, regex), which the base model serves in one request", name)
            out.append((name.replace("frequency", "freq").replace("presence", "pres"), value))
    if body.repetition_penalty not in (None, 1.0):
        raise ApiError(400, f"repetition_penalty: not supported: {MANY_REQUESTS}, and SGLang's frontend, "
                            "which serve sends through, does not pass it", "repetition_penalty")
    if body.stop_token_ids:
        if not routed:
            raise ApiError(400, f"stop_token_ids: {TWO_VOCABULARIES}; use stop strings", "stop_token_ids")
        out.append(("stop_ids", list(body.stop_token_ids)))
    if body.ignore_eos:
        if not routed:
            raise ApiError(400, "ignore_eos: a SpecReason run ends where its reasoning ends (an answer, or the "
                                "budget); it has no end of sequence to ignore. Load generators: pass "
                                "--disable-ignore-eos", "ignore_eos")
        out.append(("ignore_eos_", True))
    if body.logit_bias:
        raise ApiError(400, f"logit_bias: {TWO_VOCABULARIES}", "logit_bias")
    if body.seed is not None:
        raise ApiError(400, "seed: per-request seeds do not reach the runtimes (SGLang's frontend sends "
                            "none); seed the local runtimes with --seed instead", "seed")
    return tuple(out)


def _config(cfg: SpecReasonConfig, body: CommonRequest, cap: Optional[int], cap_param: str) -> SpecReasonConfig:
    """The server's config with what the request sets, each checked and named if out of range."""
    options = body.specreason
    changes = (
        ("max_completion_tokens", cap, cap_param),
        ("draft_temperature", body.temperature, "temperature"),
        ("base_temperature", body.temperature, "temperature"),
        ("top_p", body.top_p, "top_p"),
        ("score_method", options and options.judge, "specreason.judge"),
        ("threshold", options and options.threshold, "specreason.threshold"),
        ("speculate", options and options.speculate, "specreason.speculate"),
        ("framing", options and options.framing, "specreason.framing"),
        ("keep_draft_prefix", options and options.keep_draft_prefix, "specreason.keep_draft_prefix"),
        ("chat_template_kwargs", _template_kwargs(cfg, body), "chat_template_kwargs"),
    )
    values = {name: value for name, value, _ in changes if value is not None}
    params = {name: param for name, value, param in changes if value is not None}
    try:  # at once: a rule over two fields (keep_draft_prefix and the judge) holds for the pair
        return cfg.replace(**values)
    except ConfigError as e:  # named by the field its message starts with
        param = params[next((name for name in values if str(e).startswith(name)), next(iter(values)))]
        raise ApiError(400, f"{param}: {e}", param) from None


def _template_kwargs(cfg: SpecReasonConfig, body: CommonRequest) -> Optional[dict]:
    """The chat template arguments of a request over the server's (None: the request sets
    none)."""
    asked = getattr(body, "chat_template_kwargs", None)
    return None if asked is None else {**(cfg.chat_template_kwargs or {}), **asked}


def _stops(stop: Union[str, List[str], None]) -> Tuple[str, ...]:
    stops = [stop] if isinstance(stop, str) else list(stop or ())
    if len(stops) > 16:
        raise ApiError(400, f"stop: at most 16 stop strings, got {len(stops)}", "stop")
    return tuple(s for s in stops if s)


def chat_jobs(body: ChatRequest, cfg: SpecReasonConfig, judged: bool = True,
              separate_reasoning: bool = True) -> List[Job]:
    """The jobs a chat request asks for; an ``ApiError`` naming the field that is wrong.
    ``judged``: the server's mode drafts and judges (a one-model mode speculates nothing);
    ``separate_reasoning``: the server's default for the request field of that name (the
    thinking in ``reasoning_content``, apart from ``content``)."""
    if body.tools or (body.tool_choice not in (None, "none")) or body.parallel_tool_calls:
        param = "tools" if body.tools else "tool_choice" if body.tool_choice not in (None, "none") else "parallel_tool_calls"
        raise ApiError(400, f"{param}: SpecReason calls no tools", param)
    try:
        talk = conversation([(m.role, _text_of(m, i)) for i, m in enumerate(body.messages)])
    except InputError as e:
        raise ApiError(400, str(e), str(e).split(":", 1)[0]) from None
    constraint = _constraint(body)
    if constraint is not None:
        constraint = replace(constraint, sampling=_sampling(body, routed=True))
    else:
        _sampling(body, routed=False)
    cap = body.max_completion_tokens or body.max_tokens
    cfg = _config(cfg if judged else cfg.replace(speculate="never"), body, cap,
                  "max_completion_tokens" if body.max_completion_tokens else "max_tokens")
    if body.top_logprobs and not body.logprobs:
        raise ApiError(400, "top_logprobs: needs logprobs: true", "top_logprobs")
    # every judge gives them: a drafted step's come from the judge's prefill, which holds the step
    logprobs = (body.top_logprobs or 0) if body.logprobs else None
    if constraint is None:
        cfg = cfg.replace(logprobs=logprobs)
    options = body.specreason
    separate = separate_reasoning if body.separate_reasoning is None else body.separate_reasoning
    # whether the prompt opens the thinking is the templates' to say (the solver's ``thinking``);
    # until asked, what the framing says
    thinking = Thinking(opened=cfg.framing == PAPER) if separate and constraint is None else None
    job = Job(f"chatcmpl-{uuid.uuid4().hex}", cfg, conversation=talk, stops=_stops(body.stop),
              trace=bool(options and options.trace), logprobs=logprobs, constraint=constraint,
              thinking=thinking)
    return [replace(job, index=i) for i in range(body.n or 1)]


def completion_jobs(body: CompletionRequest, cfg: SpecReasonConfig,
                    decode: Optional[Callable[[Sequence[int]], str]] = None, judged: bool = True) -> List[Job]:
    """The jobs a completion request asks for: ``n`` per prompt, choice ``i * n + j`` for the
    ``j``-th run of prompt ``i``, as OpenAI numbers them. Token-id prompts are decoded with
    ``decode`` (the base model's tokenizer)."""
    if body.suffix:
        raise ApiError(400, "suffix: not supported (SpecReason continues a prompt; it does not fill in)",
                       "suffix")
    if body.best_of not in (None, 1):
        raise ApiError(400, "best_of: not supported; ask for n choices instead", "best_of")
    constraint = _constraint(body)
    if constraint is not None:
        constraint = replace(constraint, sampling=_sampling(body, routed=True))
    else:
        _sampling(body, routed=False)
    prompts = _prompts(body.prompt, decode)
    cfg = _config(cfg if judged else cfg.replace(speculate="never"), body, body.max_tokens, "max_tokens")
    logprobs = body.logprobs
    if constraint is None:
        cfg = cfg.replace(logprobs=logprobs)
    options = body.specreason
    rid = f"cmpl-{uuid.uuid4().hex}"
    n = body.n or 1
    return [Job(rid, cfg, index=i * n + j, source=i, prompt=prompt, max_tokens=cfg.max_completion_tokens or cfg.token_budget,
                stops=_stops(body.stop), trace=bool(options and options.trace), echo=bool(body.echo),
                logprobs=logprobs, constraint=constraint)
            for i, prompt in enumerate(prompts) for j in range(n)]


def _prompts(prompt, decode) -> List[str]:
    """The prompts of a completion request: a string, a list of them, token ids, or a list of
    token-id lists."""
    if isinstance(prompt, str):
        prompts = [prompt]
    elif prompt and all(isinstance(x, int) for x in prompt):
        prompts = [prompt]
    else:
        prompts = list(prompt)
    if not prompts:
        raise ApiError(400, "prompt: no prompt given", "prompt")
    out = []
    for i, p in enumerate(prompts):
        where = "prompt" if len(prompts) == 1 else f"prompt[{i}]"
        if not isinstance(p, str):
            if decode is None:
                raise ApiError(400, f"{where}: token ids need the base model's tokenizer, which is not at "
                                    "hand here; send text", where)
            p = decode(p)
        if not p:
            raise ApiError(400, f"{where}: the prompt is empty", where)
        out.append(p)
    return out
