"""`bbjtune export`: the command line of the export stage (serving its files is `bbjtune serve`, serve/cli.py)."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.console import Console

from bbjtune.config import load_config
from bbjtune.export.stage import run_stage

ConfigArg = Annotated[
    str, typer.Argument(help="A config YAML file or a preset name (see `bbjtune config list`).")
]
SetOpt = Annotated[
    list[str] | None,
    typer.Option("--set", help="Override one setting, e.g. --set export.verify=false (repeatable)."),
]


def export(config: ConfigArg, set_: SetOpt = None) -> None:
    """Package the trained model for use: GGUF files for Ollama/llama.cpp, a Modelfile, a vLLM config.

    Merges the trained adapter into the base model (merged/), writes GGUF files (f16, q8_0 and the smaller q4_k_m by default), an Ollama Modelfile with the right chat format and stop tokens, and vllm-lora.json with the vLLM launch command.

    Every GGUF is loaded with llama.cpp and checked against the merged model (same tokens, close next-token scores, same greedy text); the figures are in verify.json.

    Run `bbjtune train CONFIG` first.
    """
    cfg = load_config(config, set_)
    out = run_stage(cfg)
    console = Console(stderr=True)
    console.print(f"\n[bold green]Done.[/] Exported files are in [bold]{out}[/]. Next:")
    console.print(f"  bbjtune serve ollama {config}   # load it into Ollama")
    console.print(f"  bbjtune serve gguf {config}     # local OpenAI-compatible server (no Ollama needed)")
    console.print(f"  bbjtune serve vllm {config}     # the vLLM launch command")
