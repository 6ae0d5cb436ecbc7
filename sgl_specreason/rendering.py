"""Prompts from the model's own chat template, through transformers' ``apply_chat_template``.

A model needs no file here: its tokenizer's chat template renders its prompts, as SGLang's and
vLLM's chat APIs do (``tokenize=False``; ``continue_final_message=True`` where the assistant
turn is continued, as the paper's code continues it through the server's chat API).

Each prompt of one problem on one runtime must extend the previous one (the reasoning prompt,
each new step, the judge's question), or the radix cache serves none of it. Some templates
break that: DeepSeek-R1's and Qwen3's cut an assistant message before its ``</think>``, Qwen3's
puts an empty thinking block before a continued message, and a template whose generation prompt
opens thinking (R1's newer revision) renders a continued message without it. So each template
is probed once (per set of template arguments) with conversations whose answers are known, and
takes one of two ways:

- ``continued``: ``apply_chat_template`` of the conversation with the assistant's text as a
  continued final message gives exactly the generation prompt followed by that text, for text
  with and without a thinking block, and the judge's conversation extends it: every prompt is
  rendered so (SmolLM2, Qwen2.5).
- ``markers``: the conversation is rendered with its generation prompt, the assistant's text
  follows it as written (what the model saw when it wrote that text itself), and the judge's
  turn is the one read off a probe conversation's rendering (DeepSeek-R1, Qwen3).

A tokenizer whose encoding adds its begin-of-sequence token itself (the runtime tokenizes the
prompt text so) gets the prompt without the one the template wrote, or the model would read two.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Dict, Optional, Sequence, Tuple

from sgl_specreason import tokens
from sgl_specreason.backend import ASK_RUNTIME
from sgl_specreason.errors import ConfigError, InputError
from sgl_specreason.framing import ASSISTANT, THINK_CLOSE, THINK_OPEN, USER, Talk, as_talk
from sgl_specreason.templates import (
    JUDGE_INSTRUCTION,
    STEP_SEPARATOR,
    TEMPLATES,
    Prompting,
    judge_prefix,
    opens_thinking,
    template_for_model,
)

CONTINUED, MARKERS = "continued", "markers"

#: thinking markers of model families, read off the template's source (the first whose closing
#: marker it mentions); ``<think>`` when it mentions none
THINK_MARKERS = (("<seed:think>", "</seed:think>"), ("\u25c1think\u25b7", "\u25c1/think\u25b7"),
                 (THINK_OPEN, THINK_CLOSE))

_PROBE_QUESTION = "Probe question?"
_PROBE_STEP = "Probe step one."
_PROBE_ANSWER = "PROBE-ASSISTANT-TEXT"
_PROBE_JUDGE = "PROBE-JUDGE-INSTRUCTION"


class OwnTemplate(Prompting):
    """A model's own chat template (its tokenizer's), rendering every prompt of the programs.

    >>> OwnTemplate(tokenizer, "DeepSeek-R1-Distill-Qwen-7B").way  # doctest: +SKIP
    'markers'
    """

    def __init__(self, tokenizer, source: str):
        if not getattr(tokenizer, "chat_template", None):
            raise ConfigError(f"the tokenizer of {source} has no chat template")
        self.tokenizer, self.source = tokenizer, source
        template = tokenizer.chat_template if isinstance(tokenizer.chat_template, str) else ""
        self.markers = next((m for m in THINK_MARKERS if m[1] in template), THINK_MARKERS[-1])
        bos = getattr(tokenizer, "bos_token", None)
        self.bos = bos if bos and _encoding_adds(tokenizer, getattr(tokenizer, "bos_token_id", None)) else None
        self._ways: Dict[tuple, Tuple[str, str]] = {}
        self._lock = threading.Lock()
        #: how this template's prompts are rendered without template arguments (``CONTINUED`` /
        #: ``MARKERS``); ``way_for`` with them
        self.way = self.way_for(())[0]
        self.name = f"{source}'s own chat template, {self.way}"

    # -- rendering ---------------------------------------------------------------------------------
    def render(self, messages: Sequence[Tuple[str, str]], kwargs: tuple = (), **how) -> str:
        """``apply_chat_template`` of ``(role, content)`` messages as text (``how``:
        ``add_generation_prompt`` or ``continue_final_message``), without a begin-of-sequence
        token the runtime's tokenizer adds itself; an ``InputError`` naming the roles when the
        template refuses them."""
        chat = [{"role": role, "content": content} for role, content in messages]
        try:
            text = self.tokenizer.apply_chat_template(chat, tokenize=False, **how, **dict(kwargs))
        except Exception as e:  # jinja's TemplateError (raise_exception), or transformers' ValueError
            roles = ", ".join(role for role, _ in messages)
            raise InputError(f"the chat template of {self.source} refuses the conversation "
                             f"(roles {roles}): {e}") from None
        return text[len(self.bos):] if self.bos and text.startswith(self.bos) else text

    def head(self, talk: Talk) -> str:
        return self.render(talk.messages, talk.kwargs, add_generation_prompt=True)

    def judge_turn(self, talk: Optional[Talk] = None) -> str:
        turn = self.way_for(talk.kwargs if talk else ())[1]
        return turn.replace(_PROBE_JUDGE, JUDGE_INSTRUCTION)

    def reasoning(self, question, steps: Sequence[str], choices=None) -> str:
        talk = as_talk(question, choices)
        head = self.head(talk)
        text = self.assistant_text(talk, head, steps)
        if self.way_for(talk.kwargs)[0] == MARKERS or not text:
            return head + text
        rendered = self._continued(talk.messages + ((ASSISTANT, text),), talk.kwargs)
        # what the probes promised; a text they did not foresee must still keep the prefix
        return rendered if rendered == head + text else head + text

    def judge(self, question, steps: Sequence[str], choices=None) -> str:
        talk = as_talk(question, choices)
        reasoning = self.reasoning(talk, steps)
        if self.way_for(talk.kwargs)[0] == CONTINUED:
            head = self.head(talk)
            text = self.assistant_text(talk, head, steps)
            rendered = self._continued(talk.messages + ((ASSISTANT, text), (USER, JUDGE_INSTRUCTION),
                                                        (ASSISTANT, judge_prefix(""))), talk.kwargs)
            if rendered is not None and rendered.startswith(reasoning):
                return rendered
        turn = self.judge_turn(talk)
        return reasoning + turn + judge_prefix(turn, talk.markers[0])

    def _continued(self, messages, kwargs) -> Optional[str]:
        """The rendering with the last message continued; None where the template cuts part of
        it (transformers then refuses) or refuses it."""
        try:
            return self.render(messages, kwargs, continue_final_message=True)
        except InputError:
            return None

    # -- the probes --------------------------------------------------------------------------------
    def way_for(self, kwargs: tuple) -> Tuple[str, str]:
        """(the way, the judge's turn with a placeholder instruction) under template arguments
        ``kwargs``, probed once."""
        with self._lock:
            if kwargs not in self._ways:
                self._ways[kwargs] = self._probe(kwargs)
            return self._ways[kwargs]

    def _probe(self, kwargs: tuple) -> Tuple[str, str]:
        question = ((USER, _PROBE_QUESTION),)
        rendered = self.render(question + ((ASSISTANT, _PROBE_ANSWER), (USER, _PROBE_JUDGE)), kwargs,
                               add_generation_prompt=True)
        at = rendered.find(_PROBE_ANSWER)
        if at < 0 or _PROBE_JUDGE not in rendered[at:]:
            raise ConfigError(f"the chat template of {self.source} drops an assistant or a user message "
                              f"from a conversation user, assistant, user; pass --draft-template / "
                              f"--base-template (one of {', '.join(sorted(TEMPLATES))})")
        turn = rendered[at + len(_PROBE_ANSWER):]
        head = self.render(question, kwargs, add_generation_prompt=True)
        opener = "" if opens_thinking(head, self.markers[0]) else self.markers[0]
        step = _PROBE_STEP + STEP_SEPARATOR
        texts = (opener + step, opener + step + self.markers[1] + STEP_SEPARATOR, step)
        if not all(self._continued(question + ((ASSISTANT, text),), kwargs) == head + text for text in texts):
            return MARKERS, turn
        judged = self._continued(question + ((ASSISTANT, texts[0]), (USER, _PROBE_JUDGE),
                                             (ASSISTANT, judge_prefix(""))), kwargs)
        if judged != head + texts[0] + turn + judge_prefix(turn, self.markers[0]):
            return MARKERS, turn
        return CONTINUED, turn


def _encoding_adds(tokenizer, token_id) -> bool:
    """The tokenizer's encoding of a text starts with ``token_id`` (it adds it itself)."""
    if token_id is None:
        return False
    try:
        return tokens.encode(tokenizer, ["a"])[0][:1] == [token_id]
    except Exception:  # a tokenizer that cannot encode here: it adds nothing we know of
        return False


_own: Dict[str, OwnTemplate] = {}
_own_lock = threading.Lock()


def own_template(folder: str) -> OwnTemplate:
    """The own chat template of the tokenizer in ``folder``, built once per folder."""
    with _own_lock:
        if folder not in _own:
            _own[folder] = OwnTemplate(tokens.local_tokenizer(folder), Path(folder).name)
        return _own[folder]


def model_template(role: str, model_path: str, override: Optional[str] = None,
                   tokenizer: Optional[str] = None, tokenizer_path: Optional[str] = None) -> Prompting:
    """The template that renders ``role``'s prompts: the hand-written ``override``
    (``--{role}-template``); else the chat template of the model's tokenizer, from
    ``tokenizer`` (``--{role}-tokenizer``) or the runtime's tokenizer or model path when it is a
    folder here; a hand-written one by the model's name only when that tokenizer has no chat
    template. Nothing is fetched from a hub: a tokenizer that is not here is an error naming
    the flags."""
    if override:
        return template_for_model(model_path, override)
    if tokenizer and tokenizer != ASK_RUNTIME:
        folder = tokens.tokenizer_folder(tokenizer)
        if folder is None:
            raise ConfigError(f"--{role}-tokenizer {tokenizer}: no tokenizer in that folder (one of "
                              f"{', '.join(tokens.TOKENIZER_FILES)} is needed)")
    else:
        folder = tokens.tokenizer_folder(tokenizer_path) or tokens.tokenizer_folder(model_path)
    if folder is None:
        raise ConfigError(
            f"the {role} model's prompts are rendered with its tokenizer's chat template, and "
            f"{model_path!r} is not a folder here: pass --{role}-tokenizer FOLDER (a local copy of "
            f"its tokenizer files) or --{role}-template NAME (hand-written: "
            f"{', '.join(sorted(TEMPLATES))})")
    tok = tokens.local_tokenizer(folder)
    if getattr(tok, "chat_template", None):
        return own_template(folder)
    try:
        return template_for_model(model_path)
    except ConfigError:
        raise ConfigError(f"the tokenizer in {folder} has no chat template, and no hand-written one "
                          f"matches {model_path!r}: pass --{role}-template NAME "
                          f"({', '.join(sorted(TEMPLATES))})") from None
