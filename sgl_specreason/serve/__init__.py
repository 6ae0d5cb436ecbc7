"""SpecReason behind an OpenAI-compatible HTTP endpoint (``sgl-specreason serve``).

    sgl-specreason serve --draft-url http://127.0.0.1:30001 --base-url http://127.0.0.1:30000

    from openai import OpenAI
    client = OpenAI(base_url="http://127.0.0.1:8000/v1", api_key="-")
    reply = client.chat.completions.create(model="specreason", messages=[
        {"role": "user", "content": "What is 17 * 23?"}])

Routes: ``POST /v1/chat/completions`` (a conversation, solved by the ``specreason`` program;
``sgl_specreason.chat`` says how the messages become its prompt), ``POST /v1/completions`` (a
prompt continued step by step by the ``continuation`` program, as the drop-in backend serves
a long ``gen``), ``GET /v1/models``, ``GET /health`` and ``GET /stats`` (requests answered and
failed, and the server's own time per request: ``Stats``). Each request is one SpecReason run
on a worker thread; at most ``max_in_flight`` run at once, up to ``max_queue`` more wait, and
the next one gets 429. With ``ServeSettings.data_dir`` (``--data-dir``), ``/v1/files`` and
``/v1/batches`` run OpenAI Batch files on the same slots, behind the live requests (``batches``).

What a response carries besides OpenAI's fields:

- ``usage.prompt_tokens`` is the request's prompt as the runtimes read it (the first call of
  the run), ``usage.prompt_tokens_details.cached_tokens`` the part of it their radix cache
  served, ``usage.completion_tokens`` the kept tokens (steps, and the closing answer), and
  ``usage.completion_tokens_details.reasoning_tokens`` those of the thinking;
- ``specreason``: steps drafted, kept and rewritten, acceptance, judge calls, tokens per role
  (every call of the run: generated, kept, prompt, cached), the stop reason; with
  ``"specreason": {"trace": true}`` in the request, every step and runtime call.

A chat reply's thinking is ``message.reasoning_content`` (``delta.reasoning_content`` when
streamed) and its answer ``content``, as SGLang's server with ``--reasoning-parser`` returns
them (``reasoning``); ``--no-separate-reasoning`` or the request's ``separate_reasoning: false``
gives one ``content``. A chat is put to the models as written (``plain``) unless ``--framing``
or the request's ``specreason.framing`` says ``paper``; ``chat_template_kwargs`` reach both
models' templates.

A request may set ``"specreason": {"judge": NAME, "threshold": X}`` (the openai client's
``extra_body``). ``max_tokens`` is the run's token budget: a chat run's reasoning stops once
its kept steps reach it and, without an answer by then, the model states one (at most
``answer_max_tokens`` more); a completion stops at it. ``temperature`` and ``top_p`` apply to
both models. A chat's ``stop`` strings cut the text and end the run; a completion's end it the
way the base model's would.

Errors come in OpenAI's format (``{"error": {"message", "type", "param", "code"}}``): 400 for a
bad body, naming the field, and for a prompt longer than the runtimes' context; 401 without
the API key; 413 for a body over the size limit; 429 when the queue is full; 502/503/504 when
a runtime fails, is down or times out. A client that goes away has its run's requests aborted
on the runtimes.
"""

from importlib import import_module

#: where each public name lives. Imported when first asked for, so that importing a module of this
#: package that needs no web server (``schema``, ``jobs``, ``answering``: what ``batch`` shares
#: with ``serve``) does not import FastAPI and uvicorn
_HOMES = {"create_app": "app", "add_serve_flags": "command", "check_listen": "command", "serve": "command",
          "ApiError": "errors", "Job": "jobs", "Finished": "runs", "ServeSettings": "runs", "StopScan": "runs",
          "ProgramSolver": "solver", "Solver": "solver"}

__all__ = list(_HOMES)


def __getattr__(name: str):
    if name not in _HOMES:
        raise AttributeError(f"module 'sgl_specreason.serve' has no attribute {name!r}")
    return getattr(import_module(f"sgl_specreason.serve.{_HOMES[name]}"), name)
