"""The solver that runs a job's program on the runtimes: a chat through the server's mode (any
registered mode: ``specreason`` by default), a completion through the ``continuation`` program,
and structured output through the base runtime's own constrained decoding."""

from __future__ import annotations

from typing import Callable, Dict, Sequence

from sgl_specreason.calls import Cancelled, CancelScope, Role, ScopedBackend, call
from sgl_specreason.errors import SpecReasonError
from sgl_specreason.modes import get_mode, program_call
from sgl_specreason.problems import make_problem
from sgl_specreason.programs import constrained_gen, continuation, judge_steps
from sgl_specreason.framing import PLAIN
from sgl_specreason.programs.steps import problem_context, read_logprobs
from sgl_specreason.serve.errors import ApiError
from sgl_specreason.serve.jobs import Job
from sgl_specreason.serve.reasoning import Thinking
from sgl_specreason.stopping import FINISHED
from sgl_specreason.templates import Continuation
from sgl_specreason.trace import BASE, DRAFT, Call, ProblemResult, Step

#: ``solver(job, on_step, scope)``: run the job (on the calling thread), call ``on_step`` with
#: each kept step as it is kept, send every runtime request within ``scope``; the result, or
#: the error that ended the run
Solver = Callable[[Job, Callable[[Step], None], CancelScope], ProblemResult]

#: a step's ``choice`` when the base model served the whole reply under constrained decoding
CONSTRAINED = "constrained"


class ProgramSolver:
    """Runs jobs on ``roles`` ({"draft": Role, "base": Role}, as ``open_runtimes`` yields them)
    in ``mode``."""

    def __init__(self, roles: Dict[str, Role], mode: str = "specreason"):
        self.roles = roles
        self.mode = get_mode(mode)

    def __call__(self, job: Job, on_step: Callable[[Step], None], scope: CancelScope) -> ProblemResult:
        backends = {name: ScopedBackend(role.backend, scope) for name, role in self.roles.items()}
        if job.constraint is not None:
            return self._constrained(job, self.roles[BASE], backends[BASE], on_step)
        if not job.is_chat:
            return self._continue(job, backends, on_step)
        roles = {name: Role(name, backends[name], self.roles[name].template) for name in self.mode.roles}
        program, arguments, backend = program_call(self.mode.name, self._problem(job), job.cfg, roles,
                                                   _Relay(on_step))
        result = call(program, backend, **arguments)
        if result.error and not scope.cancelled:
            # the program records its error as text (one failing problem never takes a batch
            # down); the request that failed holds the error itself
            failed = [e for b in backends.values() for e in b.errors if not isinstance(e, Cancelled)]
            raise failed[0] if failed else SpecReasonError(result.error)
        return result

    def _continue(self, job: Job, backends: Dict[str, ScopedBackend], on_step):
        """A completion: the judged modes draft and judge its steps; a one-model mode has that
        model continue alone (``speculate`` never, with it in both roles)."""
        cfg = job.cfg
        if self.mode.judged:
            draft, base = DRAFT, BASE
        else:
            draft = base = self.mode.roles[0]
            cfg = cfg.replace(speculate="never", first_n_base_steps=0)
        template = Continuation(job.prompt, self.roles[base].template)
        return call(continuation, backends[base], cfg=cfg, max_tokens=job.max_tokens, stops=list(job.stops),
                    on_step=on_step, draft=Role(DRAFT, backends[draft], template),
                    base=Role(BASE, backends[base], template))

    def _constrained(self, job: Job, role: Role, backend: ScopedBackend, on_step) -> ProblemResult:
        """The base model alone, in one request, under the job's constraint."""
        c, cfg = job.constraint, job.cfg
        prompt = role.template.conversation(self._talk(job, PLAIN, (role,))) if job.is_chat else job.prompt
        limit = cfg.max_completion_tokens or (cfg.token_budget if job.is_chat else job.max_tokens)
        text, meta = call(constrained_gen, backend, prompt=prompt, max_new=limit, temp=cfg.base_temperature,
                          top_p_=cfg.top_p, regex=c.regex, json_schema=c.json_schema,
                          stops=job.stops if not job.is_chat else (), logprobs=job.logprobs,
                          **dict(c.sampling))
        finish = meta.get("finish_reason") or {}
        step = Step(0, BASE, text, int(meta.get("completion_tokens") or 0), base_text=text,
                    base_tokens=int(meta.get("completion_tokens") or 0), choice=CONSTRAINED,
                    calls=[Call.from_meta(BASE, "step", meta)],
                    logprobs=read_logprobs(meta, "output") if job.logprobs is not None else None)
        on_step(step)
        kind = finish.get("type", "") if isinstance(finish, dict) else str(finish)
        return ProblemResult(job.id, "", "constrained", text=text, steps=[step],
                             stop_reason=FINISHED if kind == "stop" else kind)

    def warm(self, job: Job) -> None:
        """Prefill the prompt every run of ``job`` starts from on each runtime it uses, so that
        runs started together (``n`` > 1) share it from the radix cache instead of each
        computing it."""
        for name in ((BASE,) if job.constraint is not None else self.mode.roles):
            role = self.roles[name]
            if job.is_chat and job.constraint is not None:
                prompt = role.template.conversation(self._talk(job, PLAIN, (role,)))
            elif job.is_chat:  # as the program renders its first step (base model first)
                roles = sorted((self.roles[n] for n in self.mode.roles), key=lambda r: r.name != BASE)
                prompt = role.template.reasoning(self._talk(job, job.cfg.framing, roles), [])
            else:
                prompt = job.prompt
            cache = getattr(role.backend, "cache_prefix", None)
            if cache is not None:
                cache(prompt)

    def thinking(self, job: Job) -> Thinking:
        """Whether a chat job's reply is thinking from its first token, and the thinking's
        markers, as the templates of the mode's runtimes render its conversation (the base
        model's first). Renders each runtime's first prompt, so that a conversation a model's
        own template refuses (a role it does not take) is an ``InputError`` before any run."""
        roles = sorted((self.roles[n] for n in self.mode.roles), key=lambda r: r.name != BASE)
        talk = self._talk(job, job.cfg.framing, roles)
        for role in roles:
            role.template.reasoning(talk, [])
        return Thinking(talk.think, talk.markers)

    @staticmethod
    def _problem(job: Job):
        return make_problem(None, id=job.id, messages=job.conversation.messages)

    def _talk(self, job: Job, framing: str, roles: Sequence[Role]):
        """The job's conversation under ``framing``, as ``roles``' templates render it."""
        return problem_context(self._problem(job), job.cfg.replace(framing=framing), roles).asked

    def prompt_logprobs(self, prompt: str, top: int) -> list:
        """The prompt's tokens as the base model scores them, from one prefill (an echoed prompt
        with ``logprobs``): [text, log-prob (None for the first), alternatives]."""
        backend = self.roles[BASE].backend
        [meta] = call(judge_steps, backend, prefix="", continuations=[prompt], top_logprobs=max(1, top),
                      logprob_start=0)
        tokens = meta.get("input_token_logprobs") or []
        tops = meta.get("input_top_logprobs") or [None] * len(tokens)
        return [[entry[2] or "", entry[0], [[alt[2] or "", alt[0]] for alt in (alts or []) if alt[0] is not None][:top]]
                for entry, alts in zip(tokens, tops)]

    def decode(self, ids: Sequence[int]) -> str:
        """Token ids of the base model as text (a completion's token-id prompt)."""
        backend = self.roles[BASE].backend
        tokenizer = backend.prepare_tokenizer() if hasattr(backend, "prepare_tokenizer") else None
        if tokenizer is None:
            raise ApiError(400, "prompt: token ids need the base model's tokenizer in the server's process "
                                f"({getattr(backend, 'tokenizer_note', None) or 'none at hand'}); send text",
                           "prompt")
        try:
            return tokenizer.decode(list(ids))
        except (ValueError, TypeError, OverflowError, IndexError) as e:
            raise ApiError(400, f"prompt: token ids the base model's tokenizer cannot decode ({e})",
                           "prompt") from None


class _Relay:
    """The monitor a program reports to: hands on each kept step."""

    def __init__(self, on_step: Callable[[Step], None]):
        self.on_step_ = on_step

    def on_step(self, problem, step: Step) -> None:
        self.on_step_(step)

    def on_result(self, result: ProblemResult) -> None:
        pass
