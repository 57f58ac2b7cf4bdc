"""`bbjtune export` and `bbjtune serve ollama|vllm|gguf` (heavy imports stay inside the functions)."""

from __future__ import annotations

import shutil
import signal
import subprocess
import sys
from pathlib import Path
from typing import Annotated

import typer

from bbjtune.errors import BbjtuneError

ConfigArg = Annotated[str, typer.Argument(help="A config YAML file or a preset name (see `bbjtune config list`).")]
SetOpt = Annotated[list[str] | None, typer.Option(
    "--set", help="Override one setting, e.g. --set export.verify=false (repeatable).")]

serve_app = typer.Typer(
    no_args_is_help=True, rich_markup_mode="rich",
    help="Run an exported BBj model: in Ollama, in vLLM, or as a local OpenAI-compatible server.\n\n"
         "Run [bold]bbjtune export CONFIG[/bold] first; these commands use its files.")


def export(config: ConfigArg, set_: SetOpt = None) -> None:
    """Package the trained model for use: GGUF files for Ollama/llama.cpp, a Modelfile, a vLLM config.

    Merges the trained adapter into the base model (merged/), writes GGUF files (f16, q8_0 and the smaller q4_k_m by default), an Ollama Modelfile with the right chat format and stop tokens, and vllm-lora.json with the vLLM launch command.

    Every GGUF is loaded with llama.cpp and checked against the merged model (same tokens, close next-token scores, same greedy text); the figures are in verify.json.

    Run `bbjtune train CONFIG` first.
    """
    from rich.console import Console

    from bbjtune.config import load_config
    from bbjtune.export.stage import run_stage

    cfg = load_config(config, set_)
    out = run_stage(cfg)
    console = Console(stderr=True)
    console.print(f"\n[bold green]Done.[/] Exported files are in [bold]{out}[/]. Next:")
    console.print(f"  bbjtune serve ollama {config}   # load it into Ollama")
    console.print(f"  bbjtune serve gguf {config}     # local OpenAI-compatible server (no Ollama needed)")
    console.print(f"  bbjtune serve vllm {config}     # the vLLM launch command")


@serve_app.command("ollama")
def serve_ollama(config: ConfigArg, set_: SetOpt = None) -> None:
    """Create the Ollama model from the exported Modelfile (`ollama create`), or show how to.

    When `ollama` is installed on this machine, runs `ollama create NAME -f Modelfile` in the export directory. Otherwise prints the commands to run where Ollama is installed.
    """
    from bbjtune.config import load_config
    from bbjtune.export.modelfile import ollama_model_name, parse_modelfile

    cfg = load_config(config, set_)
    modelfile = cfg.export_dir / "Modelfile"
    if not modelfile.exists():
        raise BbjtuneError(f"{modelfile} not found", f"run `bbjtune export {config}` first")
    gguf = (cfg.export_dir / parse_modelfile(modelfile.read_text(encoding="utf-8"))["from"]).resolve()
    if not gguf.exists():
        raise BbjtuneError(f"the Modelfile points to {gguf}, which does not exist", f"run `bbjtune export {config}` again")
    name = ollama_model_name(cfg.name, cfg.export.ollama.model_name)
    command = ["ollama", "create", name, "-f", "Modelfile"]
    if shutil.which("ollama") is None:
        typer.echo(f"Ollama is not installed on this machine. Where it is, copy these two files into one folder:\n"
                   f"  {modelfile}\n  {gguf}\n"
                   f"and run there:\n  {' '.join(command)}\n  ollama run {name}")
        return
    typer.echo(f"running: {' '.join(command)}  (in {cfg.export_dir})", err=True)
    result = subprocess.run(command, cwd=cfg.export_dir)
    if result.returncode != 0:
        raise BbjtuneError(f"`ollama create` failed (exit code {result.returncode})",
                           "is the Ollama server running (`ollama serve`)? See its message above")
    typer.echo(f"Created. Try it:  ollama run {name}")


@serve_app.command("vllm")
def serve_vllm(config: ConfigArg, set_: SetOpt = None) -> None:
    """Check the adapter for vLLM and print the launch command (also written to vllm-lora.json).

    vLLM serves the base model with the BBj adapter as a LoRA chosen per request. Adapters it cannot load (DoRA, trained embeddings, rank too high) are reported, and the merged model is served instead.
    """
    from bbjtune.artifacts import atomic_write_json
    from bbjtune.config import load_config
    from bbjtune.export.adapter import read_adapter
    from bbjtune.export.merge import plan_from_trained
    from bbjtune.export.vllm import explain, plan_vllm

    cfg = load_config(config, set_)
    plan = plan_from_trained(cfg.train_dir)
    info = read_adapter(plan.adapters[-1]) if plan.adapters else None
    merged = cfg.export_dir / "merged"
    v = cfg.export.vllm
    vplan = plan_vllm(info, plan.base, served_name=v.served_name or f"bbj-{cfg.name}", max_loras=v.max_loras,
                      max_model_len=v.max_model_len, merged_dir=merged if (merged / "config.json").exists() else None)
    path = atomic_write_json(cfg.export_dir / "vllm-lora.json", vplan.to_json())
    typer.echo(explain(vplan))
    typer.echo(f"(written to {path})", err=True)


@serve_app.command("gguf")
def serve_gguf(
    target: Annotated[str, typer.Argument(help="A .gguf file, or a config/preset whose export to serve.")],
    quant: Annotated[str | None, typer.Option(help="Which exported GGUF to serve when TARGET is a config "
                                                  "(default: the one the Modelfile uses).")] = None,
    host: Annotated[str, typer.Option(help="Address to listen on. 127.0.0.1 keeps it on this machine.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8000,
    n_ctx: Annotated[int, typer.Option("--n-ctx", help="Context length in tokens (prompt + answer).")] = 4096,
    threads: Annotated[int | None, typer.Option(help="CPU threads (default: llama.cpp's choice).")] = None,
    set_: SetOpt = None,
) -> None:
    """Serve a GGUF model through an OpenAI-compatible HTTP API (llama.cpp; no Ollama needed).

    Editors, scripts and `bbjtune eval` (eval.backend: http) can then talk to the model at http://HOST:PORT/v1. Code completion: POST /v1/completions with the raw fill-in-the-middle prompt (<|fim_prefix|>…<|fim_suffix|>…<|fim_middle|>, as Continue sends it) or with "suffix". Stop it with Ctrl-C.
    """
    from bbjtune.export.quantize import require_llama_cpp

    path, alias = _gguf_target(target, quant, set_)
    require_llama_cpp()
    # llama-cpp-python's server behind a rewrite that makes editor FIM requests work (llama_server.py)
    command = [sys.executable, "-m", "bbjtune.export.llama_server", "--model", str(path), "--model_alias", alias,
               "--host", host, "--port", str(port), "--n_ctx", str(n_ctx), "--verbose", "False"]
    if threads:
        command += ["--n_threads", str(threads)]
    if host not in ("127.0.0.1", "localhost", "::1"):
        typer.echo(f"warning: listening on {host}: other machines can reach this server (it has no password)", err=True)
    typer.echo(f"Serving {path.name} as \"{alias}\" at http://{host}:{port}/v1  (Ctrl-C stops)", err=True)
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
        raise BbjtuneError(f"the llama.cpp server stopped with exit code {code}",
                           f"is port {port} already in use? Choose another with --port")


def modelfile_quant(cfg) -> str:
    """The GGUF the export's Modelfile points at (a failed q4_k_m falls back to a verified file)."""
    from bbjtune.artifacts import read_manifest

    try:
        return (read_manifest(cfg.export_dir).get("ollama") or {}).get("quant") or cfg.export.ollama.quant
    except BbjtuneError:   # no export yet, or a damaged manifest: the configured file
        return cfg.export.ollama.quant


def _gguf_target(target: str, quant: str | None, overrides: list[str] | None) -> tuple[Path, str]:
    path = Path(target).expanduser()
    if path.suffix.lower() == ".gguf":
        if not path.is_file():
            raise BbjtuneError(f"{path} does not exist", "give an existing .gguf file, or a config to serve its export")
        return path, path.name.split(".")[0]
    from bbjtune.config import load_config
    from bbjtune.export.modelfile import ollama_model_name
    from bbjtune.export.stage import gguf_path

    cfg = load_config(target, overrides)
    path = gguf_path(cfg, quant or modelfile_quant(cfg))
    if not path.exists():
        made = sorted(p.name for p in cfg.export_dir.glob("*.gguf")) if cfg.export_dir.exists() else []
        hint = (f"exported files: {', '.join(made)} (choose one with --quant)" if made
                else f"run `bbjtune export {target}` first")
        raise BbjtuneError(f"{path} does not exist", hint)
    return path, ollama_model_name(cfg.name, cfg.export.ollama.model_name)
