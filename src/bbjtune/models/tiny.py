"""Tiny Qwen2-architecture models built on the spot, for the demo and the tests.

`tiny:<preset>` gives a model directory that looks like a real Qwen2.5 checkpoint: the Qwen2
architecture with random weights, a byte-level BPE tokenizer trained here with Qwen's
pre-tokenizer rules and its special tokens (`<|endoftext|>`, `<|im_start|>`, `<|im_end|>`, the FIM
tokens, ...) placed after the learned vocabulary as Qwen does, and the ChatML template with loss
markers. It needs no download, builds in seconds and is deterministic given the seed. Built
directories are cached under `$BBJTUNE_CACHE_DIR` (default `~/.cache/bbjtune`), keyed by a hash of
everything that goes into them.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path

from bbjtune.artifacts import atomic_dir
from bbjtune.errors import BbjtuneError
from bbjtune.models.chat_template import CHATML_TRAINING_TEMPLATE, ENDOFTEXT, IM_END, IM_START
from bbjtune.quiet import quiet_weight_bars

BUILD_VERSION = "1"  # bump when the build changes, so caches are rebuilt

# Qwen2.5's special tokens, in Qwen's id order (151643 onwards there).
QWEN_SPECIAL_TOKENS = [
    ENDOFTEXT,
    IM_START,
    IM_END,
    "<|object_ref_start|>",
    "<|object_ref_end|>",
    "<|box_start|>",
    "<|box_end|>",
    "<|quad_start|>",
    "<|quad_end|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|vision_pad|>",
    "<|image_pad|>",
    "<|video_pad|>",
]
QWEN_PLAIN_ADDED_TOKENS = ["<tool_call>", "</tool_call>"]  # added, but not special
QWEN_FIM_TOKENS = [
    "<|fim_prefix|>",
    "<|fim_middle|>",
    "<|fim_suffix|>",
    "<|fim_pad|>",
    "<|repo_name|>",
    "<|file_sep|>",
]

# Qwen2's pre-tokenizer: letters, single digits, punctuation runs, newlines, spaces.
QWEN_PRETOKENIZE_REGEX = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"
    r"|\s*[\r\n]+|\s+(?!\S)|\s+"
)


@dataclass(frozen=True)
class TinyPreset:
    vocab_size: int  # the model's embedding rows (≥ tokenizer size, like Qwen's 151936)
    hidden_size: int
    intermediate_size: int
    num_hidden_layers: int
    num_attention_heads: int
    num_key_value_heads: int
    max_position_embeddings: int = 4096


PRESETS: dict[str, TinyPreset] = {
    # the test default: ~0.35M parameters, builds and trains in seconds
    "test": TinyPreset(4096, 64, 160, 2, 4, 2, 2048),
    # the demo default: ~2.4M parameters, learns the demo data in a few CPU minutes
    "demo": TinyPreset(4096, 192, 512, 4, 6, 2, 4096),
    # a larger CPU model for experiments
    "small": TinyPreset(8192, 384, 1024, 6, 6, 2, 4096),
}


def cache_root() -> Path:
    return Path(os.environ.get("BBJTUNE_CACHE_DIR", Path.home() / ".cache" / "bbjtune"))


def parse_tiny_source(source: str) -> tuple[str, int]:
    """`tiny:demo` → ("demo", 0); `tiny:test@7` → ("test", 7)."""
    spec = source.split(":", 1)[1] if ":" in source else source
    name, _, seed = spec.partition("@")
    if name not in PRESETS:
        raise BbjtuneError(
            f"unknown tiny model preset '{name}'", f"use one of: {', '.join('tiny:' + p for p in PRESETS)}"
        )
    try:
        return name, int(seed) if seed else 0
    except ValueError:
        raise BbjtuneError(f"bad seed in '{source}'", "write it as tiny:<preset>@<integer>") from None


# The example folders the tokenizer learns from. A fixed list: a new folder of examples (examples/demo,
# the demo's generated short programs) would otherwise change every tiny model and every test built on one.
TOKENIZER_EXAMPLES = ("chatml", "programs")


def tokenizer_corpus() -> list[str]:
    """The text the tiny tokenizer learns from: the embedded corpus plus the project's examples."""
    texts = [(Path(__file__).parent / "tiny_corpus.txt").read_text(encoding="utf-8")]
    examples = Path(__file__).resolve().parents[3] / "examples"
    for folder in TOKENIZER_EXAMPLES:
        for f in sorted((examples / folder).rglob("*")):
            if f.suffix in (".jsonl", ".bbj", ".src", ".bbjt", ".bbl") and f.is_file():
                texts.append(f.read_bytes().decode("utf-8", errors="replace"))
    return texts


def build_tiny(source: str = "tiny:test", cache_dir: Path | None = None) -> Path:
    """Return the directory of a built tiny model (building and caching it when needed)."""
    name, seed = parse_tiny_source(source)
    preset = PRESETS[name]
    corpus = tokenizer_corpus()
    key = hashlib.sha256(
        json.dumps(
            [
                BUILD_VERSION,
                name,
                seed,
                asdict(preset),
                [hashlib.sha256(t.encode()).hexdigest() for t in corpus],
            ]
        ).encode()
    ).hexdigest()[:16]
    root = cache_dir or cache_root() / "tiny"
    target = root / f"{name}-s{seed}-{key}"
    if (target / "config.json").exists():
        return target
    with atomic_dir(target, keep_existing=True) as tmp:  # another process may build the same entry
        tokenizer = _build_tokenizer(corpus, preset.vocab_size)
        tokenizer.save_pretrained(tmp)
        _build_model(preset, tokenizer, seed).save_pretrained(tmp)
    return target


def _build_tokenizer(corpus: list[str], model_vocab: int):
    from tokenizers import (
        AddedToken,
        Regex,
        Tokenizer,
        decoders,
        models,
        normalizers,
        pre_tokenizers,
        processors,
        trainers,
    )
    from transformers import PreTrainedTokenizerFast

    n_added = len(QWEN_SPECIAL_TOKENS) + len(QWEN_PLAIN_ADDED_TOKENS) + len(QWEN_FIM_TOKENS)
    tok = Tokenizer(models.BPE(unk_token=None, byte_fallback=False))
    tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(QWEN_PRETOKENIZE_REGEX), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    tok.decoder = decoders.ByteLevel(add_prefix_space=False, trim_offsets=False, use_regex=False)
    tok.post_processor = processors.ByteLevel(add_prefix_space=False, trim_offsets=False, use_regex=False)
    trainer = trainers.BpeTrainer(
        vocab_size=model_vocab - n_added,
        min_frequency=2,
        show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        special_tokens=[],
    )
    tok.train_from_iterator(corpus, trainer=trainer)
    tok.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in QWEN_SPECIAL_TOKENS])
    tok.add_tokens([AddedToken(t, special=False, normalized=False) for t in QWEN_PLAIN_ADDED_TOKENS])
    tok.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in QWEN_FIM_TOKENS])
    wrapped = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        eos_token=ENDOFTEXT,
        pad_token=ENDOFTEXT,
        bos_token=None,
        unk_token=None,
        additional_special_tokens=[IM_START, IM_END, *QWEN_FIM_TOKENS],
        model_max_length=32768,
        clean_up_tokenization_spaces=False,
        split_special_tokens=False,
    )
    wrapped.chat_template = CHATML_TRAINING_TEMPLATE
    return wrapped


def _build_model(preset: TinyPreset, tokenizer, seed: int):
    import torch
    from transformers import GenerationConfig, Qwen2Config, Qwen2ForCausalLM

    quiet_weight_bars()
    eos = tokenizer.convert_tokens_to_ids(ENDOFTEXT)
    config = Qwen2Config(
        vocab_size=preset.vocab_size,
        hidden_size=preset.hidden_size,
        intermediate_size=preset.intermediate_size,
        num_hidden_layers=preset.num_hidden_layers,
        num_attention_heads=preset.num_attention_heads,
        num_key_value_heads=preset.num_key_value_heads,
        max_position_embeddings=preset.max_position_embeddings,
        rope_theta=1_000_000.0,
        rms_norm_eps=1e-6,
        tie_word_embeddings=True,
        bos_token_id=eos,
        eos_token_id=eos,
        pad_token_id=None,
        use_sliding_window=False,
        dtype="float32",
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = Qwen2ForCausalLM(config)
    # A Base model stops on <|endoftext|>; stage 2 adds <|im_end|> to the stop ids.
    model.generation_config = GenerationConfig(
        bos_token_id=eos, eos_token_id=eos, pad_token_id=eos, do_sample=False
    )
    return model
