"""Load a model and its tokenizer from any source a user may have.

A source is one of
- `tiny:<preset>[@seed]`  a tiny Qwen2 model built locally (demo, tests);
- `random:<name>[@seed]`   random weights of a published architecture (`random:qwen2.5-coder-14b`),
                          saved as a local checkpoint: the scale rehearsal without a download;
- a local `.gguf` file    read by transformers' GGUF loader and dequantized to 16/32-bit weights;
- a local directory       a Hugging Face checkpoint (config.json + safetensors) or a PEFT adapter;
- a hub id                `Qwen/Qwen2.5-Coder-7B-Instruct` (needs network or the local HF cache),
                          optionally pinned: `Qwen/Qwen2.5-Coder-7B-Instruct@<branch, tag or commit>`.
"""

from __future__ import annotations

import json
import os
import re
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from bbjtune.errors import BbjtuneError
from bbjtune.models.architecture import Architecture, is_gguf_file, known_architecture, read_gguf_metadata
from bbjtune.models.random_weights import (
    build_random,
    parse_random_source,
    published_config,
    tokenizer_source,
)
from bbjtune.models.tiny import build_tiny, parse_tiny_source
from bbjtune.quiet import quiet_weight_bars

SourceKind = Literal["tiny", "gguf", "local", "hub"]
HUB_HOST = "huggingface.co"


@dataclass(frozen=True)
class ModelSource:
    """Where a model comes from, resolved: `path` is a directory for tiny/local, the file for gguf."""

    kind: SourceKind
    spec: str
    path: Path | None = None

    @property
    def pretrained_args(self) -> tuple[str, dict[str, Any]]:
        """The first argument and extra keywords for `from_pretrained`."""
        if self.kind == "gguf":
            return str(self.path.parent), {"gguf_file": self.path.name}
        if self.kind in ("tiny", "local"):
            return str(self.path), {}
        repo, _, revision = self.spec.partition("@")  # a hub id pinned to a branch, tag or commit
        return repo, {"revision": revision} if revision else {}


def check_source(spec: str) -> SourceKind:
    """Check that a source can be found without building or loading anything; returns its kind.

    Local paths must exist (with config.json or a GGUF header) and tiny presets and random
    architectures must be known (neither is built here: a random 14B checkpoint takes minutes);
    a hub id is taken on trust (checking it needs the network)."""
    if spec.strip().startswith("tiny:"):
        parse_tiny_source(spec.strip())
        return "tiny"
    if spec.strip().startswith("random:"):
        parse_random_source(spec.strip())
        return "local"  # resolve_source builds it as a local checkpoint
    return resolve_source(spec).kind


def resolve_source(spec: str) -> ModelSource:
    """Decide what kind of source `spec` is; build tiny models; check local paths exist."""
    spec = spec.strip()
    if not spec:
        raise BbjtuneError(
            "the model source is empty", "set model.source to a hub id, a directory, a .gguf or tiny:demo"
        )
    if spec.startswith("tiny:"):
        return ModelSource("tiny", spec, build_tiny(spec))
    if spec.startswith("random:"):
        return ModelSource("local", spec, build_random(spec, write_tokenizer=save_tokenizer))
    path = Path(spec).expanduser()
    looks_local = (
        spec.startswith((".", "/", "~"))
        or spec.lower().endswith(".gguf")
        or path.exists()
        or spec.count("/") != 1
    )
    if not looks_local:
        return ModelSource("hub", spec)
    if not path.exists():
        where = "" if path.is_absolute() else f" (looked for {path.absolute()})"
        raise BbjtuneError(
            f"model source '{spec}' does not exist{where}",
            "give an existing directory or .gguf file, a hub id like Qwen/Qwen2.5-Coder-7B, or tiny:demo",
        )
    if path.is_file():
        if path.suffix.lower() != ".gguf":
            raise BbjtuneError(
                f"model source '{spec}' is a file but not a .gguf",
                "pass the model's directory (with config.json) or a .gguf file",
            )
        if not is_gguf_file(path):
            raise BbjtuneError(
                f"'{spec}' is not a GGUF file (bad magic bytes)",
                "the download may be incomplete; fetch it again",
            )
        return ModelSource("gguf", spec, path.resolve())
    if not (path / "config.json").exists() and not (path / "adapter_config.json").exists():
        ggufs = sorted(path.glob("*.gguf"))
        hint = (
            f"did you mean {ggufs[0]}?" if ggufs else "a model directory holds config.json and *.safetensors"
        )
        raise BbjtuneError(f"'{spec}' has no config.json", hint)
    return ModelSource("local", spec, path.resolve())


def is_adapter_dir(source: ModelSource) -> bool:
    return (
        source.kind == "local"
        and (source.path / "adapter_config.json").exists()
        and not (source.path / "config.json").exists()
    )


def _check_hub_reachable(src: ModelSource) -> None:
    """Fail fast (instead of ~50 s of retries) when the hub id is neither cached nor reachable."""
    spec, extra = src.pretrained_args
    if os.environ.get("HF_HUB_OFFLINE") == "1":
        return  # transformers will look in the cache only, and fail quickly if absent
    try:
        from huggingface_hub import try_to_load_from_cache

        if isinstance(try_to_load_from_cache(spec, "config.json", revision=extra.get("revision")), str):
            os.environ.setdefault("HF_HUB_OFFLINE", "1")  # cached: never touch the network
            return
    except Exception:  # noqa: BLE001 — the cache lookup is only a shortcut
        pass
    try:
        socket.create_connection((HUB_HOST, 443), timeout=3).close()
    except OSError:
        raise BbjtuneError(
            f"cannot download '{spec}': the Hugging Face hub is not reachable from this machine",
            "download the model elsewhere and pass its local directory or .gguf file as model.source",
        ) from None


def _load_error(spec: str, exc: Exception) -> BbjtuneError:
    text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return BbjtuneError(
        f"could not load '{spec}': {text}",
        "check the id or path; a hub id needs network access or the local HF cache",
    )


def load_tokenizer(source: str | ModelSource, **kwargs: Any):
    """The tokenizer of a source, with Qwen's pad token set when the source has none."""
    from transformers import AutoTokenizer

    if isinstance(source, str) and source.strip().startswith("random:"):
        # random weights borrow the Qwen2.5 tokenizer: read it there, without building a checkpoint
        # (a dry run of the 32B preset must not write 61 GiB of weights to show its tokens)
        parse_random_source(source.strip())  # an unknown architecture is said as such
        tokenizer = borrowed_tokenizer(tokenizer_source(), **kwargs)
    else:
        src = source if isinstance(source, ModelSource) else resolve_source(source)
        if src.kind == "hub":
            _check_hub_reachable(src)
        name, extra = src.pretrained_args
        try:
            tokenizer = AutoTokenizer.from_pretrained(name, **extra, **kwargs)
        except (OSError, ValueError) as exc:
            raise _load_error(src.spec, exc) from exc
    if tokenizer.pad_token is None:
        tokenizer.pad_token = (
            "<|endoftext|>" if "<|endoftext|>" in tokenizer.get_vocab() else tokenizer.eos_token
        )
    restore_control_tokens(tokenizer)
    return tokenizer


# Qwen's control tokens: <|im_start|>, <|fim_prefix|>, <|file_sep|>, <tool_call>, ...
CONTROL_TOKEN = re.compile(r"<\|[a-z_]+\|>|</?tool_call>")


def restore_control_tokens(tokenizer: Any) -> list[str]:
    """Make every control token of a Qwen vocabulary one token again; returns those restored.

    Some transformers versions convert a GGUF's tokenizer with only <|endoftext|>, <|im_start|> and
    <|im_end|> as added tokens: `<|fim_prefix|>` then tokenizes as `<`, `|`, `f`, `im`, ... although
    the vocabulary holds it as one entry. Such a tokenizer, saved with an adapter and carried into
    the exported GGUF, breaks editor completion (FIM) everywhere downstream. The restored tokens keep
    their vocabulary ids and stay non-special, as in Qwen's own tokenizer (decoding keeps them).
    """
    vocab = tokenizer.get_vocab()
    if "<|im_start|>" not in vocab:
        return []  # not a Qwen ChatML vocabulary: leave it alone
    added = tokenizer.get_added_vocab()
    missing = sorted((t for t in vocab if t not in added and CONTROL_TOKEN.fullmatch(t)), key=vocab.get)
    if missing:
        from tokenizers import AddedToken

        tokenizer.add_tokens([AddedToken(t, special=False, normalized=False) for t in missing])
    return missing


def save_tokenizer(source: str, out: Path) -> None:
    """Copy a source's tokenizer into `out` (random-weight checkpoints borrow the Qwen2.5 one)."""
    borrowed_tokenizer(source).save_pretrained(out)


def borrowed_tokenizer(source: str, **kwargs: Any):
    """The tokenizer of any model source, or of a directory that holds only a tokenizer (tokenizer.json):
    the 11 MB a GPU machine without the hub needs to build random weights."""
    folder = Path(source).expanduser()
    if folder.is_dir() and (folder / "tokenizer.json").exists() and not (folder / "config.json").exists():
        from transformers import AutoTokenizer

        tok = AutoTokenizer.from_pretrained(str(folder), **kwargs)
        restore_control_tokens(tok)
        return tok
    return load_tokenizer(source, **kwargs)


def torch_dtype(name: str):
    import torch

    if name == "auto":
        if torch.cuda.is_available():
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.float32
    return {"bfloat16": torch.bfloat16, "float16": torch.float16, "float32": torch.float32}[name]


def load_model(
    source: str | ModelSource,
    dtype: str = "auto",
    quantization: Any = None,
    device_map: Any = None,
    attn_implementation: str | None = None,
    **kwargs: Any,
):
    """A causal LM from any source. `quantization` is a config.QuantizationConfig (QLoRA) or None.

    GGUF files are dequantized by transformers; the quantizer reference it leaves on the model (and
    the `quantization_config` a checkpoint saved from such a model carries) is cleared, so the model
    saves and trains like any 16-bit checkpoint.
    """
    from transformers import AutoModelForCausalLM

    quiet_weight_bars()
    src = source if isinstance(source, ModelSource) else resolve_source(source)
    if src.kind == "hub":
        _check_hub_reachable(src)
    if is_adapter_dir(src):
        raise BbjtuneError(
            f"'{src.spec}' is a LoRA adapter, not a full model",
            "pass the base model as the source and the adapter separately (or merge it first)",
        )
    name, extra = src.pretrained_args
    args: dict[str, Any] = {"dtype": torch_dtype(dtype), **extra, **kwargs}
    if attn_implementation:
        args["attn_implementation"] = attn_implementation
    if device_map is not None:
        args["device_map"] = device_map
    if quantization is not None and quantization.load_in_4bit:
        args["quantization_config"] = bnb_config(quantization)
    try:
        model = AutoModelForCausalLM.from_pretrained(name, **args)
    except (OSError, ValueError) as exc:
        raise _load_error(src.spec, exc) from exc
    if "quantization_config" in args:
        keep_4bit_layout_trainable(model)
    if _dequantized_gguf(model.config):
        model.hf_quantizer = None
        model.is_quantized = False  # the Trainer refuses "quantized" models otherwise
        del model.config.quantization_config
    return model


def _dequantized_gguf(config: Any) -> bool:
    quant = getattr(config, "quantization_config", None)
    method = quant.get("quant_method") if isinstance(quant, dict) else getattr(quant, "quant_method", None)
    return str(getattr(method, "value", method)).lower() == "gguf"


def keep_4bit_layout_trainable(model: Any) -> int:
    """Keep bitsandbytes' 4-bit layers in their training layout on CPUs with AVX-512 BF16.

    On such CPUs bitsandbytes (0.49+) rewrites a `Linear4bit` weight in place into an
    inference-only layout the first time the layer runs in eval mode without gradients (the
    trainer's evaluation pass, a stop check), and never rewrites it back when training resumes.
    Measured with bitsandbytes 0.50.2 on a tiny Qwen2: with rows that are not a whole number of
    64-value quantization blocks (`tiny:test`, 160 wide) the rewrite itself fails ("shape '[64, 2]'
    is invalid for input of size 160"); with rows that are (`tiny:demo`, every Qwen2.5 size) the
    next training step runs through the inference kernel and fails on the layers with a bias
    ("a view of a leaf Variable ... in-place operation"). Without the rewrite both train, with
    gradients identical to a model that was never evaluated; evaluation stays on the portable path.
    Returns how many layers were switched.
    """
    switched = 0
    for module in model.modules():
        if hasattr(module, "support_avx512bf16_for_cpu"):
            module.support_avx512bf16_for_cpu = False
            switched += 1
    return switched


def bnb_config(quantization: Any):
    """bitsandbytes 4-bit settings for QLoRA (nf4 + double quantization by default)."""
    try:
        import bitsandbytes  # noqa: F401
    except ImportError:
        raise BbjtuneError(
            "4-bit loading (QLoRA) needs bitsandbytes, which is not installed",
            "pip install 'bbjtune[gpu]', or set train.quantization.load_in_4bit: false",
        ) from None
    from transformers import BitsAndBytesConfig

    return BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type=quantization.quant_type,
        bnb_4bit_use_double_quant=quantization.double_quant,
        bnb_4bit_compute_dtype=torch_dtype(quantization.compute_dtype),
        bnb_4bit_quant_storage=torch_dtype(quantization.compute_dtype),
    )


def model_config(source: str):
    """The model's transformers config (architecture), without loading weights."""
    from transformers import AutoConfig

    name, extra = resolve_source(source).pretrained_args
    return AutoConfig.from_pretrained(name, **extra)


def find_architecture(source: str) -> Architecture | None:
    """The architecture from the model's files when they are here, else from a Qwen2.5 name (nothing downloaded)."""
    return architecture_of(source) or known_architecture(source)


def architecture_of(source: str) -> Architecture | None:
    """The architecture of a local, tiny or GGUF model from its files (nothing downloaded); None when unknown.

    A `random:` source answers from its published config: nothing is built."""
    if source.strip().startswith("random:"):
        try:
            name, variant, _ = parse_random_source(source.strip())
            return Architecture.from_config(published_config(name, variant))
        except BbjtuneError:
            return None
    try:
        resolved = resolve_source(source)
    except BbjtuneError:
        return None
    if resolved.kind in ("local", "tiny") and (resolved.path / "config.json").exists():
        config = json.loads((resolved.path / "config.json").read_text(encoding="utf-8"))
    elif resolved.kind == "gguf":
        m = read_gguf_metadata(resolved.path)
        arch = m.get("general.architecture", "qwen2")
        config = {
            "hidden_size": m.get(f"{arch}.embedding_length"),
            "num_hidden_layers": m.get(f"{arch}.block_count"),
            "intermediate_size": m.get(f"{arch}.feed_forward_length"),
            "num_attention_heads": m.get(f"{arch}.attention.head_count"),
            "num_key_value_heads": m.get(f"{arch}.attention.head_count_kv"),
            "vocab_size": m.get("tokenizer.ggml.tokens"),
            "tie_word_embeddings": False,
        }
    else:
        return None
    try:
        arch = Architecture.from_config(config)
        int(arch.params)  # every shape is there and numeric
    except (TypeError, ValueError, ZeroDivisionError):
        return None
    return arch
