"""Unsloth before transformers: the command line imports it first when a run will train with it.

Unsloth patches transformers, peft and trl as it is imported; imported after them it warns
"Unsloth should be imported before transformers" and trains without some of its patches. Every
bbjtune stage imports transformers at its top, so the choice has to be made by the command line,
after the config is read and before any stage module is loaded. train.backends.choose_backend still
decides (and refuses) as before; this only makes sure that, if it picks Unsloth, Unsloth came first.
"""

from __future__ import annotations

import importlib.util
import os
import sys
from typing import Any


def may_train_with_unsloth(cfg: Any) -> bool:
    """Whether the training stage can pick the unsloth backend for this config on this machine."""
    backend = cfg.train.backend
    if backend == "hf" or importlib.util.find_spec("unsloth") is None:
        return False
    if backend == "unsloth":
        return True  # an explicit choice: imported, then checked (and refused off one GPU) by the stage
    if int(os.environ.get("WORLD_SIZE", "1")) != 1:
        return False
    import torch  # torch itself may come before Unsloth; transformers, peft and trl may not

    return torch.cuda.is_available()


def import_unsloth_first(cfg: Any) -> bool | None:
    """Import Unsloth when the run may train with it. True: imported before transformers; False: too
    late (transformers was already loaded; Unsloth then warns); None: the run does not use it."""
    if not may_train_with_unsloth(cfg):
        return None
    first = "transformers" not in sys.modules
    import unsloth  # noqa: F401

    return first
