"""The request bodies ``serve`` accepts, as pydantic models.

Every field OpenAI's and SGLang's chat and completion APIs define is listed here, so that none
is accepted and then ignored: what ``serve`` cannot honour is refused with a 400 naming the
field (``jobs``), and a field no API defines is refused as unknown. docs/usage.md has the table
of every field and what ``serve`` does with it.
"""

from __future__ import annotations

from typing import Any, Dict, List, Literal, Optional, Union

from pydantic import BaseModel, ConfigDict, Field


class _Strict(BaseModel):
    # wrong types are errors, not coerced ("0.5" is no temperature); an unknown field is an
    # error too: a field accepted and then ignored would change nothing the client can see
    model_config = ConfigDict(strict=True, extra="forbid")


class SpecReasonOptions(_Strict):
    judge: Optional[str] = None
    threshold: Optional[float] = Field(None, ge=0, le=10)
    speculate: Optional[str] = None
    #: how the conversation is put to the models: "plain" (as written; serve's default) or
    #: "paper" (the paper's math instruction)
    framing: Optional[str] = None
    #: a rejected draft's lead that the judge would keep is kept, and the base model writes on
    #: from it (the config's ``keep_draft_prefix``)
    keep_draft_prefix: Optional[bool] = None
    trace: bool = False


class ContentPart(_Strict):
    type: str
    text: Optional[str] = None


class Message(_Strict):
    role: str
    content: Union[str, List[ContentPart], None] = None


class StreamOptions(_Strict):
    include_usage: Optional[bool] = None


class JsonSchema(_Strict):
    name: Optional[str] = None
    description: Optional[str] = None
    schema_: Optional[dict] = Field(None, alias="schema")
    strict: Optional[bool] = None


class ResponseFormat(_Strict):
    type: Literal["text", "json_object", "json_schema"]
    json_schema: Optional[JsonSchema] = None


class CommonRequest(_Strict):
    model: str
    max_tokens: Optional[int] = Field(None, ge=1, le=1_048_576)
    temperature: Optional[float] = Field(None, ge=0, le=2)
    top_p: Optional[float] = Field(None, gt=0, le=1)
    stop: Union[str, List[str], None] = None
    stream: Optional[bool] = False
    stream_options: Optional[StreamOptions] = None
    n: Optional[int] = Field(None, ge=1, le=64)
    seed: Optional[int] = None
    user: Optional[str] = None
    frequency_penalty: Optional[float] = Field(None, ge=-2, le=2)
    presence_penalty: Optional[float] = Field(None, ge=-2, le=2)
    repetition_penalty: Optional[float] = Field(None, gt=0, le=2)
    logit_bias: Optional[Dict[str, float]] = None
    stop_token_ids: Optional[List[int]] = None
    ignore_eos: Optional[bool] = None
    # SGLang's constrained decoding (its extensions to OpenAI's API)
    regex: Optional[str] = None
    ebnf: Optional[str] = None
    specreason: Optional[SpecReasonOptions] = None


class ChatRequest(CommonRequest):
    messages: List[Message]
    max_completion_tokens: Optional[int] = Field(None, ge=1, le=1_048_576)
    logprobs: Optional[bool] = None
    top_logprobs: Optional[int] = Field(None, ge=0, le=20)
    response_format: Optional[ResponseFormat] = None
    tools: Optional[list] = None
    tool_choice: Optional[Union[str, dict]] = None
    parallel_tool_calls: Optional[bool] = None
    # SGLang's: the thinking in reasoning_content apart from content (None: the server's
    # --separate-reasoning), and the arguments of the models' own chat templates
    separate_reasoning: Optional[bool] = None
    chat_template_kwargs: Optional[Dict[str, Any]] = None


class CompletionRequest(CommonRequest):
    prompt: Union[str, List[str], List[int], List[List[int]]]
    echo: Optional[bool] = None
    logprobs: Optional[int] = Field(None, ge=0, le=20)
    suffix: Optional[str] = None
    best_of: Optional[int] = Field(None, ge=1)
