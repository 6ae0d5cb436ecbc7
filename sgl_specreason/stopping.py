"""When reasoning stops, how a kept step is cleaned, and which kept text is reasoning.

Under every framing a kept step that ended the text (the model's end of sequence, or a stop
string) ends the run. The rest depends on the framing (``framing``):

- ``paper`` (the benchmarks, as the paper's code): a step that states the answer (``boxed``,
  ``Answer:``) ends it, and a stray ``</think>`` without one is deleted so that the thinking
  goes on;
- ``plain``: when the text is thinking (the prompt opened it, or the model wrote ``<think>``
  itself), a kept step that closes it ends the reasoning, cut after the closing marker, and the
  base model writes the answer after it; answer markers mean nothing.
"""

from __future__ import annotations

from typing import Optional, Sequence, Tuple

from sgl_specreason.framing import PAPER, THINK_CLOSE, THINK_OPEN

ANSWER_MARKERS = ("boxed", "Answer:", "ANSWER:")

FINISHED = "finished"  # the step states the answer (paper)
THOUGHT = "thought"  # the step closed the thinking: the answer comes next (plain)
ENDED = "ended"  # the step ended where the model ended its text, or at a stop string
REPEATED = "repeated"
BUDGET = "budget"


def has_answer(step: str) -> bool:
    """A step that states the final answer ends the reasoning."""
    return any(marker in step for marker in ANSWER_MARKERS)


def clean_step(step: str) -> str:
    """Drop a stray ``</think>`` from a step that gives no answer: the reasoning goes on, and a
    closed thinking block would hide the earlier steps from some chat formats (``paper``)."""
    if THINK_CLOSE in step and not has_answer(step):
        return step.replace(THINK_CLOSE, "")
    return step


def cut_after_thinking(step: str, close: str = THINK_CLOSE) -> str:
    """A step that closes the thinking, cut after its closing marker: what the draft wrote after
    it is the answer, and the base model writes that (``plain``).

    >>> cut_after_thinking("So 4.\\n</think>\\nThe answer is 4.")
    'So 4.\\n</think>'
    """
    at = step.find(close)
    return step if at < 0 else step[:at + len(close)]


def thinking(steps: Sequence[str], think: bool, opener: str = THINK_OPEN) -> bool:
    """The kept text is thinking: the prompt opened it (``think``), or the model's first step
    opened it itself."""
    return think or bool(steps) and steps[0].lstrip().startswith(opener)


def looping(steps: Sequence[str]) -> bool:
    """The last k steps repeat the k before them word for word, for some k: the model goes round
    a loop (k = 1: two identical steps in a row). A sampled solution that does this keeps doing
    it to the budget: one at 16 problems at once went round a 5-step loop from its 6th step to
    8,192 tokens, and ran alone for almost two hours after the others had ended.

    >>> looping(["a", "b", "c", "b", "c"])
    True
    >>> looping(["a", "b", "a"]), looping(["a", "b", "c", "a", "b"])
    (False, False)
    """
    n = len(steps)
    return any(steps[-1] == steps[-1 - k] and steps[n - k:] == steps[n - 2 * k:n - k] for k in range(1, n // 2 + 1))


def stop_reason(steps: Sequence[str], kept_tokens: int, token_budget: int, *, ended: bool = False,
                framing: str = PAPER, think: bool = True,
                markers: Tuple[str, str] = (THINK_OPEN, THINK_CLOSE)) -> Optional[str]:
    """Why reasoning stops after the last kept step, or None to go on. ``ended``: the last step
    ended the text; ``think``: the prompt opened thinking.

    An answer (or a closed thinking) wins over the budget; a loop (``looping``) ends it too.

    >>> stop_reason(["a", "so \\\\boxed{3}"], 10, 100)
    'finished'
    >>> stop_reason(["a", "b"], 10, 100, ended=True)
    'ended'
    >>> stop_reason(["<think>a", "b</think>"], 10, 100, framing="plain", think=False)
    'thought'
    >>> stop_reason(["a", "so \\\\boxed{3}"], 10, 100, framing="plain", think=False) is None
    True
    >>> stop_reason(["a", "a"], 10, 100)
    'repeated'
    >>> stop_reason(["a", "b"], 100, 100)
    'budget'
    >>> stop_reason(["a", "b"], 99, 100) is None
    True
    """
    if steps and framing == PAPER and has_answer(steps[-1]):
        return FINISHED
    if steps and framing != PAPER and thinking(steps, think, markers[0]) and markers[1] in steps[-1]:
        return THOUGHT
    if ended:
        return ENDED
    if looping(steps):
        return REPEATED
    if kept_tokens >= token_budget:
        return BUDGET
    return None


def split_reasoning(steps: Sequence[str], answer: Optional[str], think: bool,
                    markers: Tuple[str, str] = (THINK_OPEN, THINK_CLOSE)) -> Tuple[str, str]:
    """(reasoning, content): the kept thinking, without its markers, and the reply after it.

    A thinking run's steps are its reasoning and the closing ``answer`` (if any) its content; a
    run that did not think (``plain`` with a model that does not reason by itself) has no
    reasoning, and its steps are the reply.

    >>> split_reasoning(["<think>a", "b</think>"], "It is 4.", False)
    ('a\\n\\nb', 'It is 4.')
    >>> split_reasoning(["Dear Sam,", "Thanks."], None, False)
    ('', 'Dear Sam,\\n\\nThanks.')
    """
    text = "\n\n".join(steps)
    if not thinking(steps, think, markers[0]):
        return "", (text + ("\n\n" + answer if answer else "")).strip()
    reasoning, _, after = text.partition(markers[1])
    reasoning = reasoning.lstrip()
    if reasoning.startswith(markers[0]):
        reasoning = reasoning[len(markers[0]):]
    content = "\n\n".join(part.strip() for part in (after, answer or "") if part.strip())
    return reasoning.strip(), content
