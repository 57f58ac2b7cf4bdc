"""`bbjtune serve gguf`'s server: llama-cpp-python's OpenAI-compatible app, answering FIM requests right.

Editors ask for completions two ways, and both reach `POST /v1/completions`:

- the raw prompt: Continue (and most editor plugins for Qwen2.5-Coder) write
  `<|fim_prefix|>…<|fim_suffix|>…<|fim_middle|>` themselves. llama-cpp-python reads the FIM tokens
  in such a prompt as single tokens (special tokens are parsed when no `suffix` is given);
- OpenAI's `suffix` field (the prompt is then the text before the cursor). llama-cpp-python 0.3.x
  builds that prompt with token id 0 in place of the three FIM tokens (its `_create_completion`
  still carries "TODO: Fix" there; measured: 17 prompt tokens where the raw form has 16, and the tiny
  model answers with the token "!"). So the request is rewritten here into the raw PSM prompt
  (models/fim.py) before llama-cpp-python sees it.

Where a FIM completion ends: llama.cpp ends generation on `<|endoftext|>` (what the model writes after
the middle) and on `<|fim_pad|>`, `<|repo_name|>`, `<|file_sep|>` (end-of-generation tokens for it),
but not on `<|fim_prefix|>`/`<|fim_suffix|>`/`<|fim_middle|>`; and llama-cpp-python detokenizes special
tokens to nothing, so a stop string cannot catch them either (measured: a forced `<|fim_prefix|>`
ran on to the length limit with stop=["<|fim_prefix|>"]). A FIM request therefore gets those three
tokens banned (logit bias -100; a middle never contains them) unless the client biases them itself.

Sampling defaults: llama-cpp-python's server fills in what a request leaves out with its own
defaults, `repeat_penalty` 1.1, `top_k` 40 and `min_p` 0.05, and OpenAI clients (Continue, the
gateway, `bbjtune eval --backend http`) never send them. No evaluation used those: on the real 0.5B a
repetition penalty of 1.1 cost 5.8 points of compile@1 (experiments/real-0.5b/RESULTS.md). So every
completion and chat request without them gets what bbjtune measures with: the configured repetition
penalty (`eval.repeat_penalty`, 1.0 = off; its window is the server's `last_n_tokens_size`), no
top-k and no min-p cut (plain temperature and top_p). A request that sets them keeps its values.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from bbjtune.models.fim import FIM_MIDDLE, FIM_PREFIX, FIM_SUFFIX, fim_prompt
from bbjtune.web_security import replay_body

COMPLETIONS_PATH = "/v1/completions"
CHAT_PATH = "/v1/chat/completions"
BANNED_IN_MIDDLE = (FIM_PREFIX, FIM_SUFFIX, FIM_MIDDLE)


def _parsed(body: bytes) -> dict[str, Any] | None:
    """The request body as a JSON object, or None (the server answers that with its own validation error)."""
    try:
        request = json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError):
        return None
    return request if isinstance(request, dict) else None


def _rewrite_fim(request: dict[str, Any], banned_ids: dict[str, int]) -> bool:
    """`suffix` turned into the raw FIM prompt, FIM structure tokens banned from a FIM completion, in
    place; whether anything changed."""
    if not isinstance(request.get("prompt"), str):
        return False
    changed = False
    if isinstance(request.get("suffix"), str):
        request["prompt"] = fim_prompt(request["prompt"], request.pop("suffix"))
        changed = True
    if request["prompt"].rstrip().endswith(FIM_MIDDLE) and banned_ids:
        bias = request.get("logit_bias") if isinstance(request.get("logit_bias"), dict) else {}
        if request.get("logit_bias_type", "input_ids") == "input_ids":
            for token_id in banned_ids.values():
                bias.setdefault(str(token_id), -100.0)
            request["logit_bias"] = bias
            changed = True
    return changed


def _fill_defaults(request: dict[str, Any], defaults: dict[str, float]) -> bool:
    """`defaults` filled in, in place, where the request does not say otherwise; whether any was missing."""
    missing = {k: v for k, v in defaults.items() if request.get(k) is None}
    request.update(missing)
    return bool(missing)


def rewrite_completion_request(body: bytes, banned_ids: dict[str, int]) -> bytes:
    """A /v1/completions body with `suffix` turned into the raw FIM prompt, and FIM structure tokens
    banned from a FIM completion. Anything that is not such a request passes unchanged."""
    request = _parsed(body)
    return json.dumps(request).encode() if request is not None and _rewrite_fim(request, banned_ids) else body


def sampling_defaults(repeat_penalty: float = 1.0) -> dict[str, float]:
    """What a request that leaves them out gets, instead of llama-cpp-python's 1.1 / 40 / 0.05."""
    return {"repeat_penalty": repeat_penalty, "top_k": 0, "min_p": 0.0}


def rewrite_request(path: str, body: bytes, banned_ids: dict[str, int], defaults: dict[str, float]) -> bytes:
    """A chat or completion body as llama-cpp-python should see it: the sampling defaults, and for a
    completion the FIM rewrite; parsed and written once."""
    request = _parsed(body)
    if request is None:
        return body
    changed = _fill_defaults(request, defaults)
    if path == COMPLETIONS_PATH:
        changed = _rewrite_fim(request, banned_ids) or changed
    return json.dumps(request).encode() if changed else body


class ServedRequests:
    """ASGI middleware on every POST /v1/completions and /v1/chat/completions: the sampling defaults,
    and `rewrite_completion_request` for completions."""

    def __init__(self, app: Any, banned_ids: dict[str, int], defaults: dict[str, float] | None = None):
        self.app = app
        self.banned_ids = banned_ids
        self.defaults = sampling_defaults() if defaults is None else defaults

    async def __call__(
        self,
        scope: dict[str, Any],
        receive: Callable[[], Awaitable[dict[str, Any]]],
        send: Callable[[dict[str, Any]], Awaitable[None]],
    ) -> None:
        if (
            scope["type"] != "http"
            or scope["method"] != "POST"
            or scope["path"] not in (COMPLETIONS_PATH, CHAT_PATH)
        ):
            await self.app(scope, receive, send)
            return
        chunks, more = [], True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunks.append(message.get("body", b""))
            more = message.get("more_body", False)
        body = rewrite_request(scope["path"], b"".join(chunks), self.banned_ids, self.defaults)
        headers = [(k, v) for k, v in scope["headers"] if k.lower() != b"content-length"]
        headers.append((b"content-length", str(len(body)).encode()))
        await self.app({**scope, "headers": headers}, replay_body(body, receive), send)


def fim_token_ids(gguf_path: str | Path) -> dict[str, int]:
    """The ids of the FIM structure tokens in a GGUF's vocabulary (empty when it has none)."""
    import gguf

    reader = gguf.GGUFReader(str(gguf_path))
    field = reader.fields.get("tokenizer.ggml.tokens")
    if field is None:
        return {}
    wanted = set(BANNED_IN_MIDDLE)
    found: dict[str, int] = {}
    for token_id, part in enumerate(field.data):
        text = bytes(field.parts[part]).decode("utf-8", errors="replace")
        if text in wanted:
            found[text] = token_id
    return found


def main() -> None:
    """Same arguments as `python -m llama_cpp.server`; serve_gguf in serve/cli.py builds them."""
    import argparse
    import os

    import uvicorn
    from llama_cpp.server.app import create_app
    from llama_cpp.server.cli import add_args_from_model, parse_model_from_args
    from llama_cpp.server.settings import ModelSettings, ServerSettings, Settings

    parser = argparse.ArgumentParser(description="bbjtune's llama.cpp server (OpenAI-compatible, FIM-aware)")
    add_args_from_model(parser, Settings)
    parser.add_argument(
        "--bbjtune_repeat_penalty",
        type=float,
        default=1.0,
        help="for requests that do not set repeat_penalty",
    )
    args = parser.parse_args()
    server_settings = parse_model_from_args(ServerSettings, args)
    model_settings = parse_model_from_args(ModelSettings, args)
    app = create_app(server_settings=server_settings, model_settings=[model_settings])
    wrapped = ServedRequests(
        app, fim_token_ids(model_settings.model), sampling_defaults(args.bbjtune_repeat_penalty)
    )
    uvicorn.run(
        wrapped,
        host=os.getenv("HOST", server_settings.host),
        port=int(os.getenv("PORT", server_settings.port)),
        log_level="warning",
    )


if __name__ == "__main__":
    main()
