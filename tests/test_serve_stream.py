"""How a streamed choice ends (issue 33, part 4): on the chunk of its last tokens, as SGLang's
server sends it, without holding the earlier steps back. A step that ends the run (an end of
sequence, a stop string, the cap) is known when it is kept (``Step.final``), so its chunk carries
``finish_reason``; a chat's closing answer carries it too. The real programs on scripted fake
runtimes, read through the unchanged ``openai`` client, with the checks SGLang's
``test_completion_stream`` makes of every chunk."""

import threading

import pytest

from fake_runtime import FakeRuntime, fake_roles
from live_app import live_app
from sgl_specreason.serve import create_app
from sgl_specreason.trace import BASE, DRAFT, Call, ProblemResult, Step
from test_serve import CFG, CHAT, STEPS, app_on_fakes, client_of, draft_writes, fakes

pytestmark = pytest.mark.timeout(60)

PROMPT = "Q: 2 + 3?\n<think>"  # (the fake runtimes read the steps after a <think>)


def completion_chunks(app, **fields):
    with live_app(app) as (url, _):
        return list(client_of(url).completions.create(model="m", prompt=PROMPT, stream=True, **fields))


def check_as_sglangs_test_does(chunks, logprobs, n=1):
    """What SGLang's test_completion_stream asserts of a stream: every chunk with a choice has
    log-probabilities whose first token is text and whose first alternatives are a non-empty
    dict; the usage chunk has counts; every choice appears and is finished."""
    finished = set()
    for chunk in chunks:
        if chunk.usage is not None and not chunk.choices:
            assert chunk.usage.prompt_tokens > 0 and chunk.usage.completion_tokens > 0
            continue
        choice = chunk.choices[0]
        if logprobs is not None:
            assert isinstance(choice.logprobs.tokens[0], str)
            assert isinstance(choice.logprobs.top_logprobs[0], dict) and choice.logprobs.top_logprobs[0]
        if choice.finish_reason is not None:
            finished.add(choice.index)
    assert finished == set(range(n))


def ends(chunks):
    """Each choice's chunks after the one that carries its finish_reason (none, if it ends on it)."""
    out = {}
    for i, chunk in enumerate(chunks):
        for choice in chunk.choices:
            if choice.finish_reason is not None:
                out[choice.index] = [c for c in chunks[i + 1:] if any(x.index == choice.index for x in c.choices)]
    return out


@pytest.mark.parametrize("logprobs", [None, 2])
def test_a_completion_that_ends_at_an_end_of_sequence_finishes_on_its_last_tokens(logprobs):
    chunks = completion_chunks(app_on_fakes(), logprobs=logprobs, max_tokens=500,
                               stream_options={"include_usage": True})
    *pieces, usage = chunks
    assert [c.choices[0].text for c in pieces] == [STEPS[0]] + ["\n\n" + s for s in STEPS[1:]]
    assert [c.choices[0].finish_reason for c in pieces] == [None, None, None, "stop"]
    assert usage.choices == [] and usage.usage.completion_tokens == sum(map(len, STEPS))
    check_as_sglangs_test_does(chunks, logprobs)
    if logprobs is not None:  # the last chunk's tokens are its text's
        assert "".join(pieces[-1].choices[0].logprobs.tokens) == STEPS[-1]


def test_a_completion_cut_by_its_stop_string_or_its_cap_finishes_on_its_last_tokens():
    stopped = completion_chunks(app_on_fakes(), logprobs=1, max_tokens=500, stop=["2 + 1"])
    assert "".join(c.choices[0].text for c in stopped) == STEPS[0] + "\n\n" + STEPS[1] + "\n\nd2: "
    assert stopped[-1].choices[0].finish_reason == "stop" and stopped[-1].choices[0].text == "\n\nd2: "
    assert stopped[-1].usage is not None  # one choice, no usage chunk asked for: on its last chunk
    check_as_sglangs_test_does(stopped, 1)
    capped = completion_chunks(app_on_fakes(), logprobs=1, max_tokens=20, n=2,
                               stream_options={"include_usage": True})
    assert all(after == [] for after in ends(capped).values())  # nothing of a choice after its end
    for index in (0, 1):
        mine = [c.choices[0] for c in capped if c.choices and c.choices[0].index == index]
        assert len("".join(c.text for c in mine).replace("\n\n", "")) == 20  # a character a token
        assert mine[-1].finish_reason == "length" and mine[-1].text
    check_as_sglangs_test_does(capped, 1, n=2)


def test_a_chat_cut_by_a_stop_string_finishes_on_the_chunk_that_reaches_it():
    with live_app(app_on_fakes()) as (url, _):
        chunks = list(client_of(url).chat.completions.create(model="m", messages=CHAT["messages"],
                                                             stop="1 + 1", stream=True, logprobs=True))
    last = chunks[-1].choices[0]
    assert last.finish_reason == "stop" and last.delta.content == "\n\nd1: "
    assert "".join(t.token for t in last.logprobs.content) == "d1: "  # the paper's judge gave them
    assert all(c.choices[0].finish_reason is None for c in chunks[:-1])


def test_the_first_chunk_goes_out_when_the_first_step_is_kept():
    """The second step is not drafted until the client holds the first chunk: a stream that held
    steps back to learn which is last would wait here until the event's timeout."""
    seen = threading.Event()
    waited = []

    def draft_delay(kind, steps):
        if kind == "step" and len(steps) == 1:
            waited.append(seen.wait(20))
        return 0.0

    draft, base = fakes(draft_delay=draft_delay)
    with live_app(create_app(fake_roles(draft, base), CFG)) as (url, _):
        stream = client_of(url).completions.create(model="m", prompt=PROMPT, max_tokens=500, stream=True)
        first = next(iter(stream))
        seen.set()
        rest = list(stream)
    assert first.choices[0].text == STEPS[0] and first.choices[0].finish_reason is None
    assert waited == [True]
    assert rest[-1].choices[0].finish_reason == "stop"


def test_two_identical_steps_end_the_run_on_the_second_ones_chunk():
    """The repetition is known when the second step is kept; a chat model under ``plain`` (no
    thinking) gets no closing answer after it, so that step is the last text."""
    draft = FakeRuntime(DRAFT, lambda steps, fork: "same step.")
    app = create_app(fake_roles(draft, FakeRuntime(BASE, draft_writes)), CFG)
    with live_app(app) as (url, _):
        chunks = list(client_of(url).chat.completions.create(model="m", messages=CHAT["messages"], stream=True))
    assert [c.choices[0].delta.content for c in chunks] == ["same step.", "\n\nsame step."]
    assert [c.choices[0].finish_reason for c in chunks] == [None, "stop"]
    assert chunks[-1].model_extra["specreason"]["stop_reason"] == "repeated"


def test_an_end_not_known_with_the_last_step_comes_in_a_chunk_of_its_own():
    """A solver that does not say which step is final (``Step.final`` unset): the end comes
    after, in a chunk without text, as before."""
    def solve(job, on_step, scope):
        step = Step(0, DRAFT, "x \\boxed{1}", 3, score=9.0, calls=[Call(DRAFT, "draft", 10, 4, 3, 0.1)])
        on_step(step)
        return ProblemResult(job.id, "", "specreason", text=step.text, steps=[step], stop_reason="finished")

    with live_app(create_app(None, CFG, solver=solve)) as (url, _):
        chunks = list(client_of(url).chat.completions.create(model="m", messages=CHAT["messages"], stream=True))
    assert [c.choices[0].delta.content for c in chunks] == ["x \\boxed{1}", None]
    assert [c.choices[0].finish_reason for c in chunks] == [None, "stop"]


def test_with_logprobs_the_blank_line_before_an_empty_step_goes_with_the_next_tokens():
    """An empty kept step has no tokens; its blank line waits for the next step's, so that every
    chunk holds a token, as a client reading logprobs expects (SGLang's suite reads tokens[0])."""
    draft = FakeRuntime(DRAFT, lambda steps, fork: "" if len(steps) == 1 else draft_writes(steps, fork))
    app = create_app(fake_roles(draft, FakeRuntime(BASE, draft_writes)), CFG)
    chunks = completion_chunks(app, logprobs=1, max_tokens=500)
    texts = [c.choices[0].text for c in chunks]
    assert texts[:2] == [STEPS[0], "\n\n\n\n" + STEPS[2]]  # the empty step rode with the next
    check_as_sglangs_test_does(chunks, 1)
    plain = completion_chunks(create_app(fake_roles(draft, FakeRuntime(BASE, draft_writes)), CFG), max_tokens=500)
    assert [c.choices[0].text for c in plain][:3] == [STEPS[0], "\n\n", "\n\n" + STEPS[2]]  # without: at once
