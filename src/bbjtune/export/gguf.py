"""Write a Hugging Face Qwen2 checkpoint as a GGUF file that llama.cpp and Ollama load.

The file follows what llama.cpp expects of a Qwen2.5 model: architecture `qwen2`, llama.cpp's
tensor names (`token_embd`, `blk.N.attn_q`, ...), the hyper-parameters under `qwen2.*`, and the
tokenizer as a byte-level BPE (`gpt2`) with the `qwen2` pre-tokenizer, its merges, one type per
token (normal, control, user-defined, unused padding), the special ids (eos/eot `<|im_end|>` for a
chat model, pad `<|endoftext|>`, the FIM tokens), `add_bos_token = false` and the ChatML template.

The model's embedding matrix has more rows than the tokenizer has tokens (Qwen2.5: 151,936 vs
151,665); the missing ids are written as `[PAD<id>]` tokens of type unused, so that token ids and
embedding rows stay aligned.

f32, f16, bf16 and q8_0 are written here with the `gguf` package, one tensor at a time (memory
stays at one tensor); the other llama.cpp types are made from the f16 file by `quantize.py`.
Norms and biases stay f32 in every type, as llama.cpp's own converter does.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from bbjtune.artifacts import atomic_path
from bbjtune.errors import BbjtuneError
from bbjtune.models.chat_template import CHATML_TEMPLATE, ENDOFTEXT, IM_END
from bbjtune.sizing import ENCODE_WORKERS, WRITER_TYPES  # WRITER_TYPES: written here; the rest by llama.cpp

ARCH = "qwen2"

# Hugging Face parameter names → llama.cpp tensor names for the Qwen2 architecture.
TOP_LEVEL_NAMES = {
    "model.embed_tokens.weight": "token_embd.weight",
    "model.norm.weight": "output_norm.weight",
    "lm_head.weight": "output.weight",
}
BLOCK_NAMES = {
    "input_layernorm.weight": "attn_norm.weight",
    "self_attn.q_proj.weight": "attn_q.weight",
    "self_attn.q_proj.bias": "attn_q.bias",
    "self_attn.k_proj.weight": "attn_k.weight",
    "self_attn.k_proj.bias": "attn_k.bias",
    "self_attn.v_proj.weight": "attn_v.weight",
    "self_attn.v_proj.bias": "attn_v.bias",
    "self_attn.o_proj.weight": "attn_output.weight",
    "post_attention_layernorm.weight": "ffn_norm.weight",
    "mlp.gate_proj.weight": "ffn_gate.weight",
    "mlp.up_proj.weight": "ffn_up.weight",
    "mlp.down_proj.weight": "ffn_down.weight",
}
_BLOCK_RE = re.compile(r"^model\.layers\.(\d+)\.(.+)$")
FIM_TOKENS = {
    "fim_pre": "<|fim_prefix|>",
    "fim_suf": "<|fim_suffix|>",
    "fim_mid": "<|fim_middle|>",
    "fim_pad": "<|fim_pad|>",
    "fim_rep": "<|repo_name|>",
    "fim_sep": "<|file_sep|>",
}
# Qwen2's pre-tokenizer split rule; llama.cpp's `qwen2` pre-tokenizer applies the same one.
QWEN2_SPLIT_REGEX = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"
    r"|\s*[\r\n]+|\s+(?!\S)|\s+"
)


def gguf_tensor_name(hf_name: str) -> str | None:
    """llama.cpp's name for a Qwen2 parameter (None when the parameter has no place in GGUF)."""
    if hf_name in TOP_LEVEL_NAMES:
        return TOP_LEVEL_NAMES[hf_name]
    m = _BLOCK_RE.match(hf_name)
    if m and m.group(2) in BLOCK_NAMES:
        return f"blk.{m.group(1)}.{BLOCK_NAMES[m.group(2)]}"
    return None


# ----------------------------------------------------------------------------- model description


@dataclass
class QwenCheckpoint:
    """What the GGUF needs to know about a Qwen2 checkpoint directory (read without loading weights)."""

    directory: Path
    config: dict[str, Any]
    tensor_files: dict[str, Path]  # parameter name → safetensors file

    @property
    def tied_embeddings(self) -> bool:
        return (
            bool(self.config.get("tie_word_embeddings", False)) or "lm_head.weight" not in self.tensor_files
        )

    @property
    def rope_theta(self) -> float:
        rope = self.config.get("rope_parameters") or {}
        return float(rope.get("rope_theta", self.config.get("rope_theta", 10000.0)))


def read_checkpoint(model_dir: str | Path, tensor_names: list[str] | None = None) -> QwenCheckpoint:
    """Check that `model_dir` is a Qwen2 safetensors checkpoint and list its tensors.

    With `tensor_names` the weights come from elsewhere (export/stream.py merges them on the fly):
    `model_dir` then needs only config.json and the tokenizer.
    """
    model_dir = Path(model_dir)
    try:
        config = json.loads((model_dir / "config.json").read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise BbjtuneError(
            f"{model_dir} has no config.json", "export needs a merged model directory"
        ) from None
    model_type = config.get("model_type")
    if model_type != "qwen2":
        raise BbjtuneError(
            f"{model_dir}: GGUF export supports the Qwen2 architecture (Qwen2.5, Qwen2.5-Coder); "
            f"this model is '{model_type}'",
            "export a Qwen2.5 model, or convert it with llama.cpp's own converter",
        )
    if (config.get("quantization_config") or {}).get("quant_method", "gguf") != "gguf":
        raise BbjtuneError(
            f"{model_dir} holds quantized (bitsandbytes/GPTQ/AWQ) weights",
            "export from the 16-bit merged model (bbjtune export merges into the 16-bit base)",
        )
    if config.get("use_sliding_window"):
        raise BbjtuneError(
            f"{model_dir}: sliding-window attention is not supported by this exporter",
            "set use_sliding_window false (Qwen2.5 ships with it off)",
        )
    from safetensors import safe_open

    files = sorted(model_dir.glob("*.safetensors")) if tensor_names is None else []
    if tensor_names is None and not files:
        raise BbjtuneError(
            f"{model_dir} has no .safetensors weights", "save the model with safe_serialization"
        )
    tensor_files: dict[str, Path] = dict.fromkeys(tensor_names or [], model_dir)
    for f in files:
        with safe_open(f, framework="pt") as st:
            for key in st.keys():
                tensor_files[key] = f
    unknown = [k for k in tensor_files if gguf_tensor_name(k) is None]
    if unknown:
        raise BbjtuneError(
            f"{model_dir}: tensors with no place in a Qwen2 GGUF: {', '.join(unknown[:5])}",
            "is this a plain Qwen2ForCausalLM checkpoint (not an adapter or another model)?",
        )
    return QwenCheckpoint(model_dir, config, tensor_files)


# ----------------------------------------------------------------------------- tokenizer


@dataclass
class GgufVocab:
    tokens: list[str]
    types: list[int]
    merges: list[str]
    special_ids: dict[str, int] = field(default_factory=dict)  # eos, eot, bos, pad, fim_*


def read_vocab(model_dir: str | Path, vocab_size: int) -> GgufVocab:
    """The tokenizer of a checkpoint as GGUF wants it, padded to the model's `vocab_size` rows."""
    import gguf

    path = Path(model_dir) / "tokenizer.json"
    try:
        tj = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise BbjtuneError(
            f"{path} is missing", "save the tokenizer (fast tokenizer) next to the weights"
        ) from None
    model = tj.get("model", {})
    if model.get("type") != "BPE":
        raise BbjtuneError(
            f"{path}: expected a byte-level BPE tokenizer (Qwen2), got {model.get('type')}",
            "export a Qwen2.5 model with its own tokenizer",
        )
    if QWEN2_SPLIT_REGEX not in _split_patterns(tj.get("pre_tokenizer")):
        raise BbjtuneError(
            f"{path}: the pre-tokenizer is not Qwen2's",
            "llama.cpp would split text differently; export a Qwen2.5 tokenizer",
        )
    id_to_token: dict[int, str] = {i: t for t, i in model["vocab"].items()}
    added = {t["id"]: t for t in tj.get("added_tokens", [])}
    id_to_token.update({i: t["content"] for i, t in added.items()})
    if max(id_to_token) >= vocab_size:
        raise BbjtuneError(
            f"{path}: the tokenizer has ids up to {max(id_to_token)} but the model only "
            f"{vocab_size} embedding rows",
            "the tokenizer does not belong to this model",
        )
    tokens, types = [], []
    for i in range(vocab_size):
        if i not in id_to_token:
            tokens.append(f"[PAD{i}]")
            types.append(gguf.TokenType.UNUSED)
        elif i in added:
            tokens.append(id_to_token[i])
            types.append(gguf.TokenType.CONTROL if added[i]["special"] else gguf.TokenType.USER_DEFINED)
        else:
            tokens.append(id_to_token[i])
            types.append(gguf.TokenType.NORMAL)
    merges = [m if isinstance(m, str) else " ".join(m) for m in model.get("merges", [])]
    ids = {t: i for i, t in enumerate(tokens)}
    special = {k: ids[t] for k, t in FIM_TOKENS.items() if t in ids}
    eos_ids = _generation_eos_ids(Path(model_dir))
    if ENDOFTEXT in ids:
        special["bos"] = special["pad"] = ids[ENDOFTEXT]  # as Qwen's own GGUFs (never added: add_bos false)
    chat = IM_END in ids and (not eos_ids or ids[IM_END] in eos_ids)
    special["eos"] = ids[IM_END] if chat else (eos_ids[0] if eos_ids else ids.get(ENDOFTEXT, 0))
    if chat:
        special["eot"] = ids[IM_END]
    return GgufVocab(tokens, [int(t) for t in types], merges, special)


def _split_patterns(node: Any) -> list[str]:
    """The regexes of every Split step in a tokenizer.json pre-tokenizer (nested sequences included)."""
    if isinstance(node, list):
        return [p for child in node for p in _split_patterns(child)]
    if not isinstance(node, dict):
        return []
    found = (
        [node["pattern"]["Regex"]]
        if node.get("type") == "Split" and "Regex" in node.get("pattern", {})
        else []
    )
    return found + _split_patterns(node.get("pretokenizers", []))


def _generation_eos_ids(model_dir: Path) -> list[int]:
    """The stop ids of generation_config.json (a chat model stops on <|im_end|> and <|endoftext|>)."""
    try:
        eos = json.loads((model_dir / "generation_config.json").read_text(encoding="utf-8")).get(
            "eos_token_id"
        )
    except (FileNotFoundError, json.JSONDecodeError):
        return []
    return [eos] if isinstance(eos, int) else list(eos or [])


# ----------------------------------------------------------------------------- tensors


def _storage_type(out_type: str, shape: tuple[int, ...]):
    """The GGML type a tensor is stored in for a given output type."""
    import gguf

    T = gguf.GGMLQuantizationType
    if len(shape) == 1 or out_type == "f32":
        return T.F32
    if out_type == "q8_0":
        block = gguf.GGML_QUANT_SIZES[T.Q8_0][0]
        return T.Q8_0 if shape[-1] % block == 0 else T.F16
    return {"f16": T.F16, "bf16": T.BF16}[out_type]


def _encode(array: np.ndarray, qtype) -> np.ndarray:
    import gguf

    T = gguf.GGMLQuantizationType
    if qtype == T.F32:
        return array.astype(np.float32)
    if qtype == T.F16:
        return array.astype(np.float16)
    return gguf.quants.quantize(array.astype(np.float32), qtype)


def _tensor_order(names: list[str]) -> list[str]:
    def key(name: str) -> tuple[int, int, str]:
        m = _BLOCK_RE.match(name)
        if m:
            return (1, int(m.group(1)), name)
        return (0 if "embed" in name else 2, 0, name)

    return sorted(names, key=key)


def _file_type(out_type: str) -> int:
    import gguf

    F = gguf.LlamaFileType
    return {"f32": F.ALL_F32, "f16": F.MOSTLY_F16, "bf16": F.MOSTLY_BF16, "q8_0": F.MOSTLY_Q8_0}[out_type]


@contextmanager
def _open_tensors(ckpt: QwenCheckpoint, tensors: Any = None) -> Iterator[tuple[Callable, Callable]]:
    """(shape_of(name), get(name)) over the checkpoint's safetensors, or over `tensors` when given."""
    if tensors is not None:
        yield tensors.shape, tensors.get
        return
    from safetensors import safe_open

    handles = {f: safe_open(f, framework="pt") for f in set(ckpt.tensor_files.values())}
    try:
        yield (
            lambda name: handles[ckpt.tensor_files[name]].get_slice(name).get_shape(),
            lambda name: handles[ckpt.tensor_files[name]].get_tensor(name),
        )
    finally:
        handles.clear()


# ----------------------------------------------------------------------------- writing


def write_gguf(
    model_dir: str | Path,
    out_path: str | Path,
    out_type: str = "f16",
    *,
    name: str | None = None,
    chat_template: str = CHATML_TEMPLATE,
    on_tensor: Callable[[int, int], None] | None = None,
    tensors: Any = None,
    workers: int | None = None,
) -> Path:
    """Write `model_dir` (a Qwen2 safetensors checkpoint) as one GGUF file of `out_type`.

    `tensors`, when given, supplies the weights instead of `model_dir`'s safetensors: an object with
    `names` (list), `shape(name)` and `get(name)` (a torch tensor), e.g. stream.StreamedMerge.
    `workers`: tensors prepared at once (default: encode_workers()); the file is the same for any number.
    The file appears at `out_path` only when complete (it is written beside it and renamed).
    """
    import gguf

    if out_type not in WRITER_TYPES:
        raise BbjtuneError(
            f"GGUF type '{out_type}' is not written directly",
            f"write one of {', '.join(WRITER_TYPES)} first, then quantize it with llama.cpp",
        )
    ckpt = read_checkpoint(model_dir, None if tensors is None else list(tensors.names))
    cfg = ckpt.config
    vocab = read_vocab(ckpt.directory, int(cfg["vocab_size"]))
    names = [
        n
        for n in _tensor_order(list(ckpt.tensor_files))
        if not (n == "lm_head.weight" and ckpt.tied_embeddings)
    ]

    with atomic_path(out_path) as tmp, _open_tensors(ckpt, tensors) as (shape_of, get):
        writer = gguf.GGUFWriter(str(tmp), ARCH)
        _add_metadata(writer, ckpt, vocab, name or Path(out_path).name.split(".")[0], out_type, chat_template)
        plan = []
        for hf_name in names:
            shape = tuple(shape_of(hf_name))
            qtype = _storage_type(out_type, shape)
            if qtype in (gguf.GGMLQuantizationType.F32, gguf.GGMLQuantizationType.F16):
                dtype = np.float32 if qtype == gguf.GGMLQuantizationType.F32 else np.float16
                nbytes = int(np.prod(shape)) * np.dtype(dtype).itemsize
                writer.add_tensor_info(gguf_tensor_name(hf_name), shape, np.dtype(dtype), nbytes)
            else:
                byte_shape = gguf.quant_shape_to_byte_shape(shape, qtype)
                writer.add_tensor_info(
                    gguf_tensor_name(hf_name),
                    byte_shape,
                    np.dtype(np.uint8),
                    int(np.prod(byte_shape)),
                    raw_dtype=qtype,
                )
            plan.append((hf_name, qtype))
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_ti_data_to_file()
        for i, data in enumerate(_encoded(plan, get, workers or encode_workers())):
            writer.write_tensor_data(data)
            if on_tensor:
                on_tensor(i + 1, len(plan))
        writer.close()
    return Path(out_path)


def encode_workers() -> int:
    """Tensors read, merged and encoded at once while the file is written (sizing counts their RAM)."""
    return max(1, min(ENCODE_WORKERS, os.cpu_count() or 1))


def _encoded(plan: list[tuple[str, Any]], get: Callable, workers: int) -> Iterator[np.ndarray]:
    """Each planned tensor's bytes, in order; up to `workers` of them prepared at once in threads (reading
    safetensors, the merge's matmul and numpy's quantizer release the GIL), so the writer never waits for
    one tensor at a time on a many-core machine."""

    def encode(item: tuple[str, Any]) -> np.ndarray:
        name, qtype = item
        return _encode(get(name).float().numpy(), qtype)

    if workers <= 1:
        yield from map(encode, plan)
        return
    from collections import deque
    from concurrent.futures import ThreadPoolExecutor
    from itertools import islice

    todo = iter(plan)
    with ThreadPoolExecutor(workers, thread_name_prefix="gguf-encode") as pool:
        pending = deque(pool.submit(encode, item) for item in islice(todo, workers))
        while pending:
            data = pending.popleft().result()
            nxt = next(todo, None)
            if nxt is not None:
                pending.append(pool.submit(encode, nxt))
            yield data


def _add_metadata(
    writer, ckpt: QwenCheckpoint, vocab: GgufVocab, name: str, out_type: str, template: str
) -> None:
    import gguf

    cfg = ckpt.config

    writer.add_type(gguf.GGUFType.MODEL)
    writer.add_name(name)
    writer.add_block_count(int(cfg["num_hidden_layers"]))
    writer.add_context_length(int(cfg.get("max_position_embeddings", 32768)))
    writer.add_embedding_length(int(cfg["hidden_size"]))
    writer.add_feed_forward_length(int(cfg["intermediate_size"]))
    writer.add_head_count(int(cfg["num_attention_heads"]))
    writer.add_head_count_kv(int(cfg.get("num_key_value_heads", cfg["num_attention_heads"])))
    writer.add_rope_freq_base(ckpt.rope_theta)
    writer.add_layer_norm_rms_eps(float(cfg.get("rms_norm_eps", 1e-6)))
    _add_rope_scaling(writer, cfg)
    writer.add_file_type(_file_type(out_type))
    writer.add_quantization_version(gguf.GGML_QUANT_VERSION)

    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre("qwen2")
    writer.add_token_list(vocab.tokens)
    writer.add_token_types(vocab.types)
    writer.add_token_merges(vocab.merges)
    ids = vocab.special_ids
    for key, add in (
        ("bos", writer.add_bos_token_id),
        ("eos", writer.add_eos_token_id),
        ("eot", writer.add_eot_token_id),
        ("pad", writer.add_pad_token_id),
    ):
        if key in ids:
            add(ids[key])
    for key in FIM_TOKENS:
        if key in ids:
            writer.add_uint32(getattr(gguf.Keys.Tokenizer, f"{key.upper()}_ID"), ids[key])
    writer.add_add_bos_token(False)
    writer.add_add_eos_token(False)
    writer.add_chat_template(template)


def _add_rope_scaling(writer, cfg: dict[str, Any]) -> None:
    """YaRN long-context scaling (Qwen2.5's documented way to go past 32k), when the config enables it."""
    import gguf

    rope = cfg.get("rope_scaling") or cfg.get("rope_parameters") or {}
    kind = rope.get("rope_type") or rope.get("type")
    if kind == "yarn" and rope.get("factor"):
        writer.add_rope_scaling_type(gguf.RopeScalingType.YARN)
        writer.add_rope_scaling_factor(float(rope["factor"]))
        writer.add_rope_scaling_orig_ctx_len(int(rope.get("original_max_position_embeddings", 32768)))
    elif kind not in (None, "default"):
        raise BbjtuneError(
            f"rope scaling '{kind}' is not supported by the GGUF exporter",
            "remove rope_scaling from config.json, or use YaRN as Qwen2.5 documents",
        )
