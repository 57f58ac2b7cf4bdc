"""`bbjtune serve ollama|vllm|gguf`: run what `bbjtune export` wrote (its files, never its code);
`bbjtune serve gateway` (serve/gateway/) checks the BBj in the answers of any of them."""

from __future__ import annotations

import importlib.util
import json
import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from bbjtune.artifacts import read_manifest
from bbjtune.config import EvalConfig, RunConfig, load_config
from bbjtune.errors import BbjtuneError
from bbjtune.models.architecture import is_gguf_file
from bbjtune.serve.gateway.cli import serve_gateway
from bbjtune.net import is_loopback, listening_socket

ConfigArg = Annotated[
    str, typer.Argument(help="A config YAML file or a preset name (see `bbjtune config list`).")
]
SetOpt = Annotated[
    list[str] | None,
    typer.Option("--set", help="Override one setting, e.g. --set export.ollama.quant=q8_0 (repeatable)."),
]
VLLM_FILE = "vllm-lora.json"

serve_app = typer.Typer(
    no_args_is_help=True,
    rich_markup_mode="rich",
    help="Run an exported BBj model: in Ollama, in vLLM, or as a local OpenAI-compatible server; "
    "[bold]gateway[/bold] checks the BBj in its answers.\n\n"
    "Run [bold]bbjtune export CONFIG[/bold] first; these commands use its files.",
)


@serve_app.command("ollama")
def serve_ollama(config: ConfigArg, set_: SetOpt = None) -> None:
    """Create the Ollama model from the exported Modelfile (`ollama create`), or show how to.

    When `ollama` is installed on this machine, runs `ollama create NAME -f Modelfile` in the export directory. Otherwise prints the commands to run where Ollama is installed.
    """
    cfg = load_config(config, set_)
    modelfile = cfg.export_dir / "Modelfile"
    if not modelfile.exists():
        raise BbjtuneError(f"{modelfile} not found", f"run `bbjtune export {config}` first")
    gguf = (cfg.export_dir / modelfile_from(modelfile.read_text(encoding="utf-8"))).resolve()
    if not gguf.exists():
        raise BbjtuneError(
            f"the Modelfile points to {gguf}, which does not exist", f"run `bbjtune export {config}` again"
        )
    name = exported_ollama(cfg).get("model_name") or default_model_name(cfg)
    command = ["ollama", "create", name, "-f", "Modelfile"]
    if shutil.which("ollama") is None:
        typer.echo(
            f"Ollama is not installed on this machine. Where it is, copy these two files into one folder:\n"
            f"  {modelfile}\n  {gguf}\n"
            f"and run there:\n  {' '.join(command)}\n  ollama run {name}"
        )
        return
    typer.echo(f"running: {' '.join(command)}  (in {cfg.export_dir})", err=True)
    result = subprocess.run(command, cwd=cfg.export_dir)
    if result.returncode != 0:
        raise BbjtuneError(
            f"`ollama create` failed (exit code {result.returncode})",
            "is the Ollama server running (`ollama serve`)? See its message above",
        )
    typer.echo(f"Created. Try it:  ollama run {name}")


@serve_app.command("vllm")
def serve_vllm(config: ConfigArg, set_: SetOpt = None) -> None:
    """Print the vLLM launch command the export wrote (vllm-lora.json).

    vLLM serves the base model with the BBj adapter as a LoRA chosen per request. Adapters it cannot load (DoRA, trained embeddings, rank too high) were reported by the export, and the merged model is served instead.
    """
    cfg = load_config(config, set_)
    path = cfg.export_dir / VLLM_FILE
    try:
        plan = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise BbjtuneError(f"{path} not found", f"run `bbjtune export {config}` first") from None
    except json.JSONDecodeError as exc:
        raise BbjtuneError(
            f"{path} is not valid JSON (line {exc.lineno})", f"run `bbjtune export {config}` again"
        ) from None
    typer.echo(
        plan.get("explanation")
        or plan.get("command")
        or "the export found no way to serve this model in vLLM"
    )
    typer.echo(f"(from {path})", err=True)


@serve_app.command("gguf")
def serve_gguf(
    target: Annotated[str, typer.Argument(help="A .gguf file, or a config/preset whose export to serve.")],
    quant: Annotated[
        str | None,
        typer.Option(
            help="Which exported GGUF to serve when TARGET is a config (default: the one the Modelfile uses)."
        ),
    ] = None,
    host: Annotated[
        str, typer.Option(help="Address to listen on. 127.0.0.1 keeps it on this machine.")
    ] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8000,
    n_ctx: Annotated[int, typer.Option("--n-ctx", help="Context length in tokens (prompt + answer).")] = 4096,
    threads: Annotated[int | None, typer.Option(help="CPU threads (default: llama.cpp's choice).")] = None,
    gpu_layers: Annotated[
        int | None,
        typer.Option(
            "--gpu-layers",
            help="Layers on the GPU: -1 all, 0 none (default: all when this llama.cpp build can use a GPU, "
            "else 0).",
        ),
    ] = None,
    repeat_penalty: Annotated[
        float | None,
        typer.Option(
            help="Repetition penalty for requests that do not set one (default: the config's, as in the Modelfile; "
            "1.0 = off, what the evaluation measured)."
        ),
    ] = None,
    set_: SetOpt = None,
) -> None:
    """Serve a GGUF model through an OpenAI-compatible HTTP API (llama.cpp; no Ollama needed).

    Editors, scripts and `bbjtune eval` (eval.backend: http) can then talk to the model at http://HOST:PORT/v1. Code completion: POST /v1/completions with the raw fill-in-the-middle prompt (<|fim_prefix|>…<|fim_suffix|>…<|fim_middle|>, as Continue sends it) or with "suffix". Stop it with Ctrl-C.
    """
    path, alias, (penalty, last_n) = _gguf_target(target, quant, set_)
    if repeat_penalty is not None:
        penalty = repeat_penalty
    if importlib.util.find_spec("llama_cpp") is None:
        raise BbjtuneError(
            "llama-cpp-python is not installed; it runs the GGUF server",
            "pip install 'bbjtune[export]' (compiles llama.cpp once, a few minutes)",
        )
    # llama-cpp-python's server behind a rewrite that makes editor FIM requests work (llama_server.py)
    command = [
        sys.executable,
        "-m",
        "bbjtune.serve.llama_server",
        "--model",
        str(path),
        "--model_alias",
        alias,
        "--host",
        host,
        "--port",
        str(port),
        "--n_ctx",
        str(n_ctx),
        "--verbose",
        "False",
        # llama-cpp-python's own default for requests that do not say is 1.1 (llama_server.py)
        "--bbjtune_repeat_penalty",
        str(penalty),
        "--last_n_tokens_size",
        str(last_n),
    ]
    if threads:
        command += ["--n_threads", str(threads)]
    if gpu_layers is None:
        gpu_layers = -1 if gpu_offload_possible() else 0
    command += ["--n_gpu_layers", str(gpu_layers)]
    listening_socket(host, port).close()  # a busy port or a bad address is said before the model loads
    if not is_loopback(host):
        typer.echo(
            f"warning: listening on {host}: other machines can reach this server (it has no password)",
            err=True,
        )
    where = (
        "on the CPU"
        if gpu_layers == 0
        else "on the GPU"
        if gpu_layers < 0
        else f"{gpu_layers} layers on the GPU"
    )
    typer.echo(
        f'Serving {path.name} as "{alias}" {where} at http://{host}:{port}/v1  (Ctrl-C stops)', err=True
    )
    proc = subprocess.Popen(command)
    # stopping bbjtune stops the server too (a service manager or a test sends SIGTERM, not Ctrl-C)
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, lambda *_: proc.terminate())
    try:
        code = proc.wait()
    except KeyboardInterrupt:
        proc.terminate()
        proc.wait(timeout=10)
        return
    if code in (-signal.SIGTERM, -signal.SIGHUP):
        return
    if code != 0:
        raise BbjtuneError(
            f"the llama.cpp server stopped with exit code {code}",
            "its own message is just above; a ModuleNotFoundError means llama-cpp-python's server extra is "
            "incomplete: pip install 'llama-cpp-python[server]'",
        )


# ----------------------------------------------------------------------------- the export's files

serve_app.command("gateway")(serve_gateway)


def exported_ollama(cfg: RunConfig) -> dict[str, Any]:
    """The export manifest's `ollama` block (model_name, quant, modelfile); {} before an export."""
    try:
        return read_manifest(cfg.export_dir).get("ollama") or {}
    except BbjtuneError:  # no export yet, or a damaged manifest: the configured values
        return {}


def modelfile_quant(cfg: RunConfig) -> str:
    """The GGUF the export's Modelfile points at (a failed q4_k_m falls back to a verified file)."""
    return exported_ollama(cfg).get("quant") or cfg.export.ollama.quant


def default_model_name(cfg: RunConfig) -> str:
    return (cfg.export.ollama.model_name or f"bbj-{cfg.name}").lower()


def modelfile_from(text: str) -> str:
    """The file a Modelfile's FROM line names."""
    m = re.search(r"(?m)^FROM\s+(.+?)\s*$", text)
    if not m:
        raise BbjtuneError("the Modelfile has no FROM line", "run `bbjtune export` again")
    return m.group(1)


def gguf_alias(file_name: str) -> str:
    """The model name a bare GGUF file is served as: its name without `.gguf` and the quantization
    (`real-0.5b.q8_0.gguf` → `real-0.5b`, where cutting at the first dot gave `real-0`)."""
    stem = re.sub(r"\.gguf$", "", file_name, flags=re.IGNORECASE)
    return re.sub(r"[.-](f32|f16|bf16|q\d[\w]*|iq\d[\w]*)$", "", stem, flags=re.IGNORECASE) or stem


def gpu_offload_possible() -> bool:
    """Whether the installed llama.cpp was built with a GPU backend (CUDA, Metal, …) that can take layers.
    A CPU-only build (the default pip build on a machine without a GPU toolkit) serves on the CPU."""
    try:
        import llama_cpp
    except ImportError:
        return False
    return bool(llama_cpp.llama_supports_gpu_offload())


def _gguf_target(
    target: str, quant: str | None, overrides: list[str] | None
) -> tuple[Path, str, tuple[float, int]]:
    """(GGUF file, served model name, (repeat_penalty, repeat_last_n) as the Modelfile states them: the
    config's, or bbjtune's defaults, the evaluation's, for a bare .gguf file)."""
    path = Path(target).expanduser()
    if path.suffix.lower() == ".gguf":
        if not path.is_file():
            raise BbjtuneError(
                f"{path} does not exist", "give an existing .gguf file, or a config to serve its export"
            )
        if not is_gguf_file(path):
            raise BbjtuneError(
                f"{path} is not a GGUF file (it does not start with the GGUF signature)",
                "pass a .gguf file written by `bbjtune export` or llama.cpp (a partly copied or downloaded "
                "file looks like this too: copy it again)",
            )
        defaults = EvalConfig()
        return path, gguf_alias(path.name), (defaults.repeat_penalty, defaults.repeat_last_n)
    if path.is_file() and path.suffix.lower() not in (".yaml", ".yml"):
        raise BbjtuneError(
            f"{path} is neither a .gguf file nor a config (.yaml)",
            "pass the GGUF file to serve, or the config/preset whose export to serve",
        )

    cfg = load_config(target, overrides)
    path = cfg.gguf_file(quant or modelfile_quant(cfg))
    if not path.exists():
        made = sorted(p.name for p in cfg.export_dir.glob("*.gguf")) if cfg.export_dir.exists() else []
        hint = (
            f"exported files: {', '.join(made)} (choose one with --quant)"
            if made
            else f"run `bbjtune export {target}` first"
        )
        raise BbjtuneError(f"{path} does not exist", hint)
    return path, exported_ollama(cfg).get("model_name") or default_model_name(cfg), cfg.served_repetition
