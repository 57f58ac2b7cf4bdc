"""A LoRA adapter as a GGUF adapter, for llama.cpp (`--lora`) and Ollama (`ADAPTER`), when it can be one.

A GGUF adapter holds, for each adapted layer, the pair `blk.N.<tensor>.lora_a` / `.lora_b` next to
the base model's tensor names, and llama.cpp adds `B·A · alpha/rank` to the layer. It cannot hold
full weights: adapters with `modules_to_save`, trained token rows, LoRA on the embeddings or DoRA
have no GGUF-adapter form, and the merged GGUF is the way to ship them (`why_not()` says so).

PEFT's scaling (alpha/r, or alpha/√r with rsLoRA) is folded into B and `adapter.lora.alpha` is set
to the rank, so llama.cpp's alpha/rank factor is exactly 1 whatever scaling the adapter used.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from bbjtune.artifacts import atomic_path
from bbjtune.errors import BbjtuneError
from bbjtune.export.adapter import AdapterInfo, read_adapter
from bbjtune.export.gguf import ARCH, gguf_tensor_name


def why_not(info: AdapterInfo) -> list[str]:
    """Reasons this adapter cannot be written as a GGUF adapter (empty when it can)."""
    reasons = list(info.serving_blockers())
    if info.config.get("rank_pattern") or info.config.get("alpha_pattern"):
        reasons.append("it uses different ranks/alphas per layer (rank_pattern/alpha_pattern)")
    unmapped = sorted(m for m in info.lora_shapes if gguf_tensor_name(f"{m}.weight") is None)
    if unmapped:
        reasons.append(f"it adapts layers with no GGUF name ({', '.join(unmapped[:3])})")
    return reasons


def write_lora_gguf(adapter_dir: str | Path, out_path: str | Path, *, name: str | None = None) -> Path:
    """Write the adapter at `adapter_dir` as a GGUF LoRA adapter (f16 tensors), atomically."""
    import gguf
    from safetensors import safe_open

    info = read_adapter(adapter_dir)
    reasons = why_not(info)
    if reasons:
        raise BbjtuneError(
            f"{adapter_dir} cannot be a GGUF adapter: " + "; ".join(reasons),
            "use the merged GGUF instead (bbjtune export writes it)",
        )
    rank = int(info.config.get("r", 8))
    scaling = info.alpha / (math.sqrt(rank) if info.config.get("use_rslora") else rank)
    weights = Path(adapter_dir) / "adapter_model.safetensors"
    with atomic_path(out_path) as tmp, safe_open(weights, framework="pt") as st:
        keys = {k for k in st.keys()}
        writer = gguf.GGUFWriter(str(tmp), ARCH)
        writer.add_type(gguf.GGUFType.ADAPTER)
        writer.add_name(name or Path(out_path).name.split(".")[0])
        writer.add_string(gguf.Keys.Adapter.TYPE, "lora")
        writer.add_float32(gguf.Keys.Adapter.LORA_ALPHA, float(rank))
        for module in sorted(info.lora_shapes):
            base = gguf_tensor_name(f"{module}.weight")
            a = st.get_tensor(_key(keys, module, "A")).float().numpy()
            b = st.get_tensor(_key(keys, module, "B")).float().numpy() * scaling
            writer.add_tensor(f"{base}.lora_a", a.astype(np.float16))  # (r, in) → ggml ne [in, r]
            writer.add_tensor(f"{base}.lora_b", b.astype(np.float16))  # (out, r) → ggml ne [r, out]
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
        writer.close()
    return Path(out_path)


def _key(keys: set[str], module: str, which: str) -> str:
    for candidate in (f"base_model.model.{module}.lora_{which}.weight", f"{module}.lora_{which}.weight"):
        if candidate in keys:
            return candidate
    raise BbjtuneError(
        f"adapter weights for {module} (lora_{which}) are missing", "the adapter is damaged; train again"
    )
