"""Framing settings: how a question or conversation is put to the models, checked where it is
given (config, flags, messages), and the stop rules each framing applies."""

import pytest

from sgl_specreason.chat import conversation
from sgl_specreason.cli import build_parser
from sgl_specreason.config import SpecReasonConfig
from sgl_specreason.errors import ConfigError, InputError
from sgl_specreason.flags import config_from_args
from sgl_specreason.framing import PAPER, PLAIN, frame
from sgl_specreason.problems import make_problem
from sgl_specreason.stopping import ENDED, THOUGHT, split_reasoning, stop_reason


def test_the_flags_reach_the_config():
    args = build_parser().parse_args(["solve", "--framing", "plain", "--chat-template-kwargs",
                                      '{"enable_thinking": false}', "q"])
    cfg = config_from_args(args)
    assert cfg.framing == PLAIN and cfg.chat_template_kwargs == {"enable_thinking": False}
    assert SpecReasonConfig().framing == PAPER  # the benchmarks' prompt stays the default
    with pytest.raises(SystemExit):
        build_parser().parse_args(["solve", "--chat-template-kwargs", "[1]", "q"])


@pytest.mark.parametrize("changes,named", [({"framing": "chatty"}, "framing must be one of paper, plain"),
                                           ({"chat_template_kwargs": ["x"]}, "chat_template_kwargs must be"),
                                           ({"chat_template_kwargs": {"a": {"b": 1}}}, "plain values")])
def test_bad_framing_settings_are_named(changes, named):
    with pytest.raises(ConfigError, match=named):
        SpecReasonConfig(**changes)


def test_a_problem_carries_a_conversation():
    problem = make_problem(None, id="c", messages=[("developer", "Be brief."), ("user", "Hi"),
                                                   ("assistant", "Hello."), ("user", "How are you? ")])
    assert problem.question == "How are you?"
    assert problem.messages[0] == ("system", "Be brief.") and len(problem.messages) == 4
    with pytest.raises(InputError, match="problem c: give a question or messages, not both"):
        make_problem("q", id="c", messages=[("user", "Hi")])
    with pytest.raises(InputError, match=r"messages\[0\].role: 'tool' is not supported"):
        conversation([("tool", "x"), ("user", "Hi")])
    with pytest.raises(InputError, match="the last message must come from the user"):
        conversation([("user", "Hi"), ("assistant", "Hello.")])


def test_paper_frames_the_last_message_and_plain_keeps_it():
    chat = [("system", "Be brief."), ("user", "2 + 2?")]
    paper, plain = frame(chat, PAPER, choices=["3", "4"]), frame(chat, PLAIN)
    assert paper.messages[0] == ("system", "Be brief.") and "(B) 4" in paper.question
    assert paper.question.startswith("What is the correct answer") and paper.think
    assert plain.messages == tuple(chat) and not plain.think


def test_a_closed_thinking_wins_over_an_ended_step_and_a_model_may_open_thinking_itself():
    assert stop_reason(["<think>a", "b</think>"], 1, 100, ended=True, framing=PLAIN, think=False) == THOUGHT
    # a step that closes thinking nobody opened is text like any other
    assert stop_reason(["a", "b</think>"], 1, 100, framing=PLAIN, think=False) is None
    assert stop_reason(["a", "b</think>"], 1, 100, ended=True, framing=PLAIN, think=False) == ENDED
    # the model's own markers, read off its template
    markers = ("<seed:think>", "</seed:think>")
    assert stop_reason(["<seed:think>a", "b</seed:think>"], 1, 100, framing=PLAIN, think=False,
                       markers=markers) == THOUGHT
    assert split_reasoning(["<seed:think>a", "b</seed:think>"], "c", False, markers) == ("a\n\nb", "c")
