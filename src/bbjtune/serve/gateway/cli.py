"""`bbjtune serve gateway`: start the checking gateway (heavy imports stay inside the function)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated
from urllib.parse import urlparse

import typer

from bbjtune.net import LOOPBACK_HOSTS, is_loopback, listening_socket, new_token
from bbjtune.bbj.compile import check_compiler
from bbjtune.errors import BbjtuneError

from .check import CHECKS, RETRIES

DEFAULT_LOG = Path("runs/gateway/exchanges.sqlite")
UPSTREAM_SHORTCUTS = {
    "ollama": "http://127.0.0.1:11434/v1",
    "gguf": "http://127.0.0.1:8000/v1",
    "vllm": "http://127.0.0.1:8000/v1",
}


def serve_gateway(
    upstream: Annotated[
        str,
        typer.Option(
            help="The model server to ask: its OpenAI-compatible address (http://HOST:PORT/v1), or ollama, gguf or "
            "vllm for their local defaults (11434, 8000, 8000)."
        ),
    ] = "gguf",
    model: Annotated[
        str | None,
        typer.Option(
            help="Ask the upstream for this model, whatever the editor sends (e.g. the Ollama model name)."
        ),
    ] = None,
    best_of: Annotated[
        int,
        typer.Option(
            "--best-of", min=1, max=8, help="Draw up to N answers until the BBj code passes (see --checks)."
        ),
    ] = 1,
    diagnostics: Annotated[
        str,
        typer.Option(
            help="Where the checker's verdict goes: field (a `bbjtune` field in every response) or comment (also a "
            "note appended to chat answers)."
        ),
    ] = "field",
    compiler: Annotated[
        str, typer.Option(help="auto (bbjcpl when installed, else the built-in checker), bbjcpl or builtin.")
    ] = "auto",
    checks: Annotated[
        str,
        typer.Option(
            help="What a chat answer's BBj must pass: clean (the checker and the tier 2 checks: BBjAPI methods "
            "that exist, defined labels, no runaway repetition) or compile (the checker alone)."
        ),
    ] = "clean",
    retry: Annotated[
        str,
        typer.Option(
            help="How --best-of asks again for a chat answer that fails: resample (a new answer at temperature "
            "0.7) or repair (the answer goes back to the model with what the checker found, to be corrected; "
            "once each answer, then resample). Completions always resample."
        ),
    ] = "resample",
    host: Annotated[
        str,
        typer.Option(
            help="Address to listen on. Anything but 127.0.0.1/localhost requires the access token printed at start "
            "(the API key in the editor)."
        ),
    ] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on (0 picks a free one).")] = 8100,
    token: Annotated[
        str | None,
        typer.Option(help="Access token to require (default: a new random one when not on loopback)."),
    ] = None,
    log: Annotated[
        Path, typer.Option(help="The SQLite file that keeps every exchange and rating.")
    ] = DEFAULT_LOG,
    no_log: Annotated[
        bool, typer.Option("--no-log", help="Keep nothing: no log, no ids, no rating.")
    ] = False,
    upstream_key: Annotated[
        str | None,
        typer.Option(
            help="API key the upstream requires (vLLM --api-key); the editor's own key is never passed on."
        ),
    ] = None,
    max_request_kb: Annotated[
        int, typer.Option(min=1, help="Refuse requests larger than this (KiB).")
    ] = 1024,
) -> None:
    """An OpenAI-compatible endpoint that checks the BBj in every answer, with best-of-N and a feedback log.

    Put it between your editor (Continue, ...) and the model server (Ollama, `bbjtune serve gguf`, vLLM): it passes requests on, runs the BBj checker on each answer (bbjcpl when installed), with --best-of N asks again until the code passes, and logs each exchange with an id for rating at http://HOST:PORT/feedback. `bbjtune data feedback LOG` turns ratings and corrections into training data.
    """
    import uvicorn

    from bbjtune.gateway_log import ExchangeLog

    from .app import GatewaySettings, create_app

    if diagnostics not in ("field", "comment"):
        raise BbjtuneError(f"unknown --diagnostics {diagnostics!r}", "use field or comment")
    if checks not in CHECKS:
        raise BbjtuneError(f"unknown --checks {checks!r}", "use clean or compile")
    if retry not in RETRIES:
        raise BbjtuneError(f"unknown --retry {retry!r}", "use resample or repair")
    if retry == "repair" and best_of == 1:
        typer.echo("note: --retry repair takes effect with --best-of 2 or more", err=True)
    check_compiler(compiler)
    if compiler == "bbjcpl":
        from bbjtune.bbj.bbjcpl import find_bbjcpl

        if find_bbjcpl() is None:
            raise BbjtuneError(
                "bbjcpl was not found on PATH or in $BBJ_HOME/bin",
                "set BBJ_HOME to your BBj installation, or use --compiler auto",
            )
    base = upstream_url(upstream)
    local = is_loopback(host)
    if token is not None and len(token) < 16:
        raise BbjtuneError(
            "the access token is too short (fewer than 16 characters)",
            "leave --token out to get a random one",
        )
    if not local and token is None:
        token = new_token()
    store = None if no_log else ExchangeLog(log)
    settings = GatewaySettings(
        upstream=base,
        upstream_key=upstream_key,
        model=model,
        best_of=best_of,
        diagnostics=diagnostics,
        compiler=compiler,
        checks=checks,
        retry=retry,
        max_body_bytes=max_request_kb * 1024,
    )
    sock = listening_socket(host, port)
    port = sock.getsockname()[1]
    shown = f"[{host}]" if ":" in host else host
    if not is_loopback(urlparse(base).hostname or ""):
        typer.echo(f"note: prompts and answers go to {base}, which is not on this machine", err=True)
    typer.echo(
        f"Gateway at http://{shown}:{port}/v1 in front of {base}"
        + (
            f"; best of {best_of}" + ("; failing answers go back for repair" if retry == "repair" else "")
            if best_of > 1
            else ""
        )
        + ("; the checker alone" if checks == "compile" else "; the checker and tier 2"),
        err=True,
    )
    typer.echo(
        f"Exchanges are logged in {log} (rate them at http://{shown}:{port}/feedback)"
        if store
        else "Logging is off: nothing is stored.",
        err=True,
    )
    if token:
        typer.echo(f"Access token (the editor's API key): {token}")
        typer.echo("Anyone on the network with this token can use the model; share it only with your team.")
    typer.echo("Press Ctrl+C to stop.", err=True)
    app = create_app(settings, store, token=token, allowed_hosts=LOOPBACK_HOSTS | {host} if local else None)
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False, lifespan="on"))
    try:
        server.run(sockets=[sock])
    except KeyboardInterrupt:  # uvicorn re-raises the Ctrl+C it handled; stopping is the normal end
        pass
    finally:
        sock.close()
        if store:
            store.close()


def upstream_url(value: str) -> str:
    url = UPSTREAM_SHORTCUTS.get(value.lower(), value).rstrip("/")
    parsed = urlparse(url)
    if parsed.scheme not in ("http", "https") or not parsed.hostname:
        raise BbjtuneError(
            f"--upstream {value!r} is not an http(s) address",
            "give e.g. http://127.0.0.1:11434/v1, or ollama, gguf or vllm",
        )
    return url
