"""The request bodies ``serve`` accepts, as pydantic models."""

from __future__ import annotations

from typing import List, Optional, Union

from pydantic import BaseModel, ConfigDict, Field


class _Strict(BaseModel):
    # wrong types are errors, not coerced ("0.5" is no temperature); unknown fields are ignored,
    # as other OpenAI-compatible servers do (clients send their own extras)
    model_config = ConfigDict(strict=True, extra="ignore")


class SpecReasonOptions(_Strict):
    judge: Optional[str] = None
    threshold: Optional[float] = Field(None, ge=0, le=10)
    trace: bool = False


class ContentPart(_Strict):
    type: str
    text: Optional[str] = None


class Message(_Strict):
    role: str
    content: Union[str, List[ContentPart], None] = None


class CommonRequest(_Strict):
    model: str
    max_tokens: Optional[int] = Field(None, ge=1, le=1_048_576)
    temperature: Optional[float] = Field(None, ge=0, le=2)
    top_p: Optional[float] = Field(None, gt=0, le=1)
    stop: Union[str, List[str], None] = None
    stream: Optional[bool] = False
    n: Optional[int] = Field(None, ge=1)
    logprobs: Optional[Union[bool, int]] = None
    specreason: Optional[SpecReasonOptions] = None


class ChatRequest(CommonRequest):
    messages: List[Message]
    max_completion_tokens: Optional[int] = Field(None, ge=1, le=1_048_576)
    tools: Optional[list] = None


class CompletionRequest(CommonRequest):
    prompt: Union[str, List[str]]
    echo: Optional[bool] = None
