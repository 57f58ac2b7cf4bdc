"""Random weights of a real, named architecture, saved as a local Hugging Face checkpoint.

`random:qwen2.5-coder-14b[@seed]` gives a directory that looks exactly like a downloaded
Qwen2.5-Coder checkpoint — the published config, sharded safetensors with an index, the Qwen2.5
tokenizer — but with random weights. Every verb then runs on it the way it runs on real weights,
which is what a scale rehearsal needs where the hub is out of reach: memory, speed, disk and export
behave as with the real model; only the answers are nonsense (and run to the token limit, the
slowest case for evaluation).

The configs below are the published Qwen2.5-Coder ones, as facts: every field that decides shapes
or compute (hidden size, layers, heads, vocabulary, tied embeddings) is the published value. The
Base and Instruct checkpoints share the architecture and differ in the end-of-sequence id.

The tokenizer is shared by the whole Qwen2.5 family, so it is taken from any model source that has
it: `BBJTUNE_TOKENIZER_SOURCE` (a directory, a .gguf or a hub id), else the Qwen2.5-Coder-0.5B
GGUF at its default location (`benchmarks/fetch_qwen05b.py` puts it there).

Weights are written tensor by tensor into shards of at most `SHARD_BYTES`: peak host memory is one
shard, not the model (a 32B model is 65 GB in bf16), and a CUDA GPU, when present, draws the random
numbers. Built directories are cached under `$BBJTUNE_CACHE_DIR/random`, keyed by everything that
goes into them; a build goes to a temporary directory first and is renamed when complete
(artifacts.atomic_dir, as for tiny models: the directory and its files get the umask's modes).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from bbjtune.artifacts import atomic_dir
from bbjtune.errors import BbjtuneError
from bbjtune.models.architecture import QWEN25, Architecture
from bbjtune.models.tiny import cache_root

BUILD_VERSION = "1"
SHARD_BYTES = 4 * 1024**3
INIT_STD = 0.02  # Qwen2's initializer_range: activations stay finite through every layer

_COMMON = {
    "architectures": ["Qwen2ForCausalLM"],
    "model_type": "qwen2",
    "hidden_act": "silu",
    "attention_dropout": 0.0,
    "initializer_range": INIT_STD,
    "rms_norm_eps": 1e-6,
    "rope_theta": 1_000_000.0,
    "max_position_embeddings": 32768,
    "sliding_window": 131072,
    "use_sliding_window": False,
    "use_cache": True,
    "bos_token_id": 151643,
    "torch_dtype": "bfloat16",
}


# name -> the fields that differ between sizes (Qwen2.5-Coder's published config.json files)
PUBLISHED: dict[str, dict[str, Any]] = {
    f"qwen2.5-coder-{size}": a.config_fields() for size, a in QWEN25.items()
}
EOS = {"base": 151643, "instruct": 151645}  # <|endoftext|>, <|im_end|>
DEFAULT_TOKENIZER_GGUF = "qwen2.5-coder-0.5b-instruct-q4_k_m.gguf"


def parse_random_source(spec: str) -> tuple[str, str, int]:
    """`random:qwen2.5-coder-7b-instruct@3` → ("qwen2.5-coder-7b", "instruct", 3)."""
    body = spec.split(":", 1)[1] if spec.startswith("random:") else spec
    name, _, seed = body.strip().lower().partition("@")
    m = re.fullmatch(r"(qwen2\.5-coder-[0-9.]+b)(?:-(base|instruct))?", name)
    if not m or m.group(1) not in PUBLISHED:
        names = ", ".join(f"random:{n}" for n in PUBLISHED)
        raise BbjtuneError(
            f"unknown architecture in '{spec}'",
            f"use one of {names} (add -instruct for the Instruct end-of-turn id, @N for a seed)",
        )
    try:
        return m.group(1), m.group(2) or "base", int(seed) if seed else 0
    except ValueError:
        raise BbjtuneError(f"bad seed in '{spec}'", "write it as random:<name>@<integer>") from None


def published_config(name: str, variant: str = "base") -> dict[str, Any]:
    """The config.json of a published Qwen2.5-Coder checkpoint (shape-deciding fields exact)."""
    return {**_COMMON, **PUBLISHED[name], "eos_token_id": EOS[variant]}


def parameter_count(config: dict[str, Any]) -> int:
    """Parameters of a Qwen2 model from its config (q/k/v carry biases; norms one vector each)."""
    return Architecture.from_config(config).params


def tokenizer_source() -> str:
    """Where the Qwen2.5 tokenizer comes from (see the module docstring)."""
    explicit = os.environ.get("BBJTUNE_TOKENIZER_SOURCE")
    if explicit:
        return explicit
    default = cache_root() / DEFAULT_TOKENIZER_GGUF
    if default.exists():
        return str(default)
    raise BbjtuneError(
        "random weights need the Qwen2.5 tokenizer, and none was found",
        f"run `python benchmarks/fetch_qwen05b.py` (puts it in {default}) or set BBJTUNE_TOKENIZER_SOURCE "
        "to any Qwen2.5 model directory or .gguf",
    )


def build_random(
    spec: str,
    write_tokenizer: Callable[[str, Path], None],
    cache_dir: Path | None = None,
    progress: bool = True,
) -> Path:
    """The directory of `random:<name>` (built on first use, then cached).

    `write_tokenizer(source, directory)` saves the tokenizer of a model source into the checkpoint
    (models.loading passes its own, which knows every kind of source).
    """
    name, variant, seed = parse_random_source(spec)
    tok_src = tokenizer_source()
    tok_path = Path(tok_src).expanduser()
    tok_key = [tok_src, tok_path.stat().st_size if tok_path.is_file() else None]
    config = published_config(name, variant)
    key = hashlib.sha256(json.dumps([BUILD_VERSION, config, seed, tok_key]).encode()).hexdigest()[:12]
    root = cache_dir or cache_root() / "random"
    target = root / f"{name}-{variant}-s{seed}-{key}"
    if (target / "model.safetensors.index.json").exists():
        return target
    root.mkdir(parents=True, exist_ok=True)
    _check_disk(root, parameter_count(config) * 2, spec)
    with atomic_dir(target, keep_existing=True) as tmp:  # another process may build the same entry
        write_tokenizer(tok_src, tmp)
        write_random_checkpoint(config, tmp, seed=seed, progress=progress)
    return target


def _check_disk(where: Path, weight_bytes: int, spec: str) -> None:
    needed = int(weight_bytes * 1.02) + 64 * 1024**2
    free = shutil.disk_usage(where).free
    if free < needed:
        raise BbjtuneError(
            f"not enough disk for {spec}: its weights need {needed / 2**30:.1f} GiB in {where}, "
            f"{free / 2**30:.1f} GiB free",
            "free space, or set BBJTUNE_CACHE_DIR to a larger disk",
        )


def write_random_checkpoint(
    config: dict[str, Any], out: Path, *, seed: int = 0, progress: bool = True, shard_bytes: int = SHARD_BYTES
) -> int:
    """Write config, generation config and random bf16 weights of `config` into `out`; return bytes.

    Shapes and names come from the transformers model built on the meta device (no memory), so the
    checkpoint loads with `from_pretrained` like a real one. Norm weights are ones and biases zeros,
    as a freshly initialised Qwen2 has them; matrices are N(0, 0.02).
    """
    import torch
    from safetensors.torch import save_file
    from transformers import AutoModelForCausalLM, GenerationConfig, Qwen2Config

    out.mkdir(parents=True, exist_ok=True)
    hf_config = Qwen2Config(**{k: v for k, v in config.items() if k not in ("architectures", "model_type")})
    hf_config.architectures = ["Qwen2ForCausalLM"]
    hf_config.save_pretrained(out)
    GenerationConfig(
        bos_token_id=config["bos_token_id"],
        eos_token_id=config["eos_token_id"],
        pad_token_id=151643,
        do_sample=False,
    ).save_pretrained(out)
    with torch.device("meta"):
        meta = AutoModelForCausalLM.from_config(hf_config, dtype=torch.bfloat16)
    tensors = [
        (n, tuple(p.shape))
        for n, p in meta.state_dict().items()
        if not (config.get("tie_word_embeddings") and n == "lm_head.weight")
    ]
    del meta
    device = "cuda" if torch.cuda.is_available() else "cpu"
    gen = torch.Generator(device=device).manual_seed(seed)
    total = sum(_numel(s) * 2 for _, s in tensors)
    shards: list[list[str]] = [[]]
    pending: dict[str, Any] = {}
    pending_bytes = 0
    written = 0

    def flush() -> None:
        nonlocal pending, pending_bytes
        if pending:
            save_file(pending, str(out / f"shard-{len(shards) - 1:05d}.tmp"), metadata={"format": "pt"})
            shards.append([])
        pending, pending_bytes = {}, 0

    with _progress(f"writing random weights ({total / 2**30:.1f} GiB)", total, progress) as advance:
        for name, shape in tensors:
            size = _numel(shape) * 2
            if pending and pending_bytes + size > shard_bytes:
                flush()
            if name.endswith("norm.weight"):
                t = torch.ones(shape, dtype=torch.bfloat16)
            elif name.endswith(".bias"):
                t = torch.zeros(shape, dtype=torch.bfloat16)
            else:
                t = torch.empty(shape, dtype=torch.bfloat16, device=device).normal_(
                    0.0, INIT_STD, generator=gen
                )
            pending[name] = t.cpu()
            shards[-1].append(name)
            pending_bytes += size
            written += size
            advance(size)
        flush()
    shards = [s for s in shards if s]
    n = len(shards)
    weight_map = {}
    for i, names in enumerate(shards):
        final = f"model-{i + 1:05d}-of-{n:05d}.safetensors"
        os.replace(out / f"shard-{i:05d}.tmp", out / final)
        weight_map.update({name: final for name in names})
    index = {"metadata": {"total_size": written}, "weight_map": weight_map}
    (out / "model.safetensors.index.json").write_text(json.dumps(index, indent=2), encoding="utf-8")
    return written


@contextmanager
def _progress(label: str, total: int, enabled: bool) -> Iterator[Callable[[int], None]]:
    if not enabled:
        yield lambda n: None
        return
    from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeElapsedColumn

    with Progress(
        TextColumn(label), BarColumn(), DownloadColumn(), TimeElapsedColumn(), transient=True
    ) as bar:
        task = bar.add_task(label, total=total)
        yield lambda n: bar.advance(task, n)


def _numel(shape: tuple[int, ...]) -> int:
    n = 1
    for d in shape:
        n *= d
    return n
