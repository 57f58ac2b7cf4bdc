"""Keep third-party noise out of what a bbjtune command prints, so that what remains is actionable.

- bitsandbytes is loaded only by runs that quantize (QLoRA) or use its 8-bit optimizers. peft
  before 0.22 imports it whenever it is installed (later ones when a layer needs it), and on a CPU with AVX-512 BF16 its import logs
  "Failed to load CPU gemm_4bit_forward from kernels-community ..." (a kernel for an inference
  layout bbjtune never uses, see models.loading.keep_4bit_layout_trainable) and costs seconds
  (measured with bitsandbytes 0.50.2: 14 s of its import time is torch.compile machinery, on a
  busy 2-core machine). The CLI decides before anything imports it.
- transformers' per-tensor "Loading weights" and "Writing model shards" bars are dropped: a few
  lines of carriage-return noise per model in every log. Download bars (huggingface_hub's) stay.
"""

from __future__ import annotations

import logging
import sys
from typing import Any

_UNLOADED = "bitsandbytes"
BNB_CPU_LOGGER = "bitsandbytes.backends.cpu.ops"  # logs the kernel notice when bitsandbytes is imported
WEIGHT_BARS = ("Loading weights", "Writing model shards")


def needs_bitsandbytes(cfg: Any) -> bool:
    """Whether a run with this config may load bitsandbytes (4-bit weights, 8-bit optimizer, Unsloth)."""
    t = cfg.train
    return bool(t.quantization.load_in_4bit) or "8bit" in t.optim or t.backend != "hf"


def leave_bitsandbytes_unloaded() -> bool:
    """Make this process behave as if bitsandbytes were not installed; False when it is already loaded.

    A `None` entry in sys.modules makes `import bitsandbytes` raise ImportError (peft then does
    without it) and `importlib.util.find_spec` return None (transformers' and peft's availability
    checks then say no). Call it before those libraries are imported, and only where the
    process will not need bitsandbytes: their availability checks cache their answer.
    """
    if _UNLOADED in sys.modules:
        return sys.modules[_UNLOADED] is None
    sys.modules[_UNLOADED] = None
    return True


def allow_bitsandbytes() -> None:
    """Undo `leave_bitsandbytes_unloaded` (before anything has asked whether bitsandbytes is there).

    Its import-time notice about the AVX-512 inference kernel is dropped here too: QLoRA runs keep
    their layers off that kernel's layout (models.loading.keep_4bit_layout_trainable), so the
    notice is about nothing bbjtune runs.
    """
    if _UNLOADED in sys.modules and sys.modules[_UNLOADED] is None:
        del sys.modules[_UNLOADED]
    logging.getLogger(BNB_CPU_LOGGER).addFilter(_drop_kernel_notice)


def _drop_kernel_notice(record: logging.LogRecord) -> bool:
    return not str(record.msg).startswith("Failed to load CPU gemm_4bit_forward")


def quiet_weight_bars() -> None:
    """Drop transformers' per-tensor load/save bars (transformers 5 has the hook; older ones keep theirs)."""
    from transformers.utils import logging as hf_logging

    set_hook = getattr(hf_logging, "set_tqdm_hook", None)
    if set_hook is not None:
        set_hook(_drop_weight_bars)


def _drop_weight_bars(factory: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    if kwargs.get("desc") in WEIGHT_BARS:
        kwargs = {**kwargs, "disable": True}
    return factory(*args, **kwargs)
