"""Quantize a GGUF with llama.cpp's own quantizer (q4_k_m and the other k-quants), via llama-cpp-python.

The k-quants (q4_k_m, q5_k_m, q6_k, ...) need llama.cpp's quantizer: it chooses per tensor (the
"_m" mixes keep attention-value and feed-forward-down weights at higher precision) and falls back
to a compatible type for tensors whose rows are not a multiple of the 256-wide k-quant block
(small models). The input is the f16 GGUF written by gguf.py; the output appears atomically.
"""

from __future__ import annotations

import ctypes
import os
from pathlib import Path

from bbjtune.artifacts import atomic_path
from bbjtune.errors import BbjtuneError

# bbjtune's quant names → llama.cpp file types (llama_ftype).
LLAMA_CPP_TYPES = {
    "q8_0": "LLAMA_FTYPE_MOSTLY_Q8_0",
    "q6_k": "LLAMA_FTYPE_MOSTLY_Q6_K",
    "q5_k_m": "LLAMA_FTYPE_MOSTLY_Q5_K_M",
    "q4_k_m": "LLAMA_FTYPE_MOSTLY_Q4_K_M",
    "q4_0": "LLAMA_FTYPE_MOSTLY_Q4_0",
    "q3_k_m": "LLAMA_FTYPE_MOSTLY_Q3_K_M",
    "q2_k": "LLAMA_FTYPE_MOSTLY_Q2_K",
}


def require_llama_cpp():
    """The llama_cpp module, or a BbjtuneError that says how to install it."""
    try:
        import llama_cpp
    except ImportError:
        raise BbjtuneError(
            "llama-cpp-python is not installed; it quantizes (q4_k_m) and verifies GGUF files",
            "pip install 'bbjtune[export]' (compiles llama.cpp once, a few minutes), or set "
            "export.gguf to [f16, q8_0] and export.verify: false",
        ) from None
    return llama_cpp


def quantize(
    source: str | Path, out_path: str | Path, quant: str, threads: int | None = None, requantize: bool = False
) -> Path:
    """Quantize the f16/bf16/f32 GGUF `source` to `quant` with llama.cpp; returns `out_path`.

    `requantize`: `source` is itself quantized (q8_0): llama.cpp dequantizes each tensor and quantizes it
    again, which it otherwise refuses (export.kquant_source: q8_0)."""
    if quant not in LLAMA_CPP_TYPES:
        raise BbjtuneError(
            f"unknown llama.cpp quant type '{quant}'", f"use one of {', '.join(LLAMA_CPP_TYPES)}"
        )
    source = Path(source)
    if not source.is_file():
        raise BbjtuneError(f"{source} does not exist", "write the f16 GGUF first")
    llama_cpp = require_llama_cpp()
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = getattr(llama_cpp, LLAMA_CPP_TYPES[quant])
    params.nthread = threads or (1 if source.stat().st_size < 64 * 2**20 else os.cpu_count() or 1)
    params.allow_requantize = requantize
    with quiet_llama_logs(), atomic_path(out_path) as tmp:
        rc = llama_cpp.llama_model_quantize(str(source).encode(), str(tmp).encode(), ctypes.byref(params))
        if rc != 0:
            raise BbjtuneError(
                f"llama.cpp could not quantize {source} to {quant} (code {rc})",
                "check that the f16 GGUF loads (bbjtune export verifies it) and that disk space is left",
            )
    return Path(out_path)


class quiet_llama_logs:
    """Silence llama.cpp's per-tensor log lines for the duration of a block (they go to stderr)."""

    _callback = None

    def __enter__(self):
        llama_cpp = require_llama_cpp()

        @llama_cpp.llama_log_callback
        def _drop(level, text, user_data):  # noqa: ARG001 — signature fixed by llama.cpp
            return None

        type(self)._callback = _drop  # keep a reference: llama.cpp calls it from C
        llama_cpp.llama_log_set(_drop, ctypes.c_void_p(0))
        return self

    def __exit__(self, *exc):
        return False
