"""Do packed examples stay apart? bbjtune's SFT batch, as the trainer builds it, against each example alone.

Takes the first training batch of bbjtune's stage 2 recipe (packing on) with the chosen backend,
runs the model on it, and runs the model again on every packed example by itself. If attention
crossed from one example into the next, the packed logits of the later examples differ from the
lone ones. A control run feeds the same rows with plain positions (no example boundaries): its
logits must differ, which shows the check can see contamination at all.

    python tests/packing_check.py                     # hf backend, tiny model, CPU or GPU
    python tests/packing_check.py --backend unsloth   # one CUDA GPU, Unsloth installed

tests/test_train_packing_check.py runs it in the test suite (the CPU case in-process, the GPU and
Unsloth cases as this script: Unsloth must be imported first in a fresh process).

Prints the largest difference per example relative to the largest lone logit; exits 1 when an
example differs by more than --tolerance, 2 when the trainer's batches are not packed at all, 3 when
the control shows no contamination either.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

EXAMPLES = Path(__file__).resolve().parents[1] / "examples" / "chatml" / "bbj-instructions.jsonl"


def conversations(n: int) -> list[list[dict[str, str]]]:
    """The project's own BBj examples (the first n), as stage 2 trains on them."""
    from bbjtune.train.inputs import load_conversations

    return load_conversations(EXAMPLES)[:n]


def trainer_batch(model_dir: str, backend: str, dtype: str, work: Path) -> tuple[Any, dict[str, Any]]:
    """The trainer's model and its first packed training batch, exactly as `bbjtune train` builds them."""
    from rich.console import Console

    from bbjtune.config import validate_config
    from bbjtune.train import sft
    from bbjtune.train.job import StageJob
    from bbjtune.train.model_io import load_training_tokenizer
    from bbjtune.train.trainer import configure_torch, make_trainer, training_arguments
    from bbjtune.train.inputs import TrainingData

    cfg = validate_config(
        {
            "name": "check",
            "output_dir": str(work),
            "model": {"source": model_dir, "kind": "instruct", "dtype": dtype, "attn_implementation": "sdpa"},
            "data": {"chatml": ["-"], "output_dir": str(work / "data")},
            "train": {
                "backend": backend,
                "stages": "sft",
                "optim": "adamw_torch",
                "gradient_checkpointing": False,
                "lora": {"r": 8, "alpha": 16, "dropout": 0.0},
                "quantization": {"load_in_4bit": False},
                "sft": {
                    "max_steps": 1,
                    "max_length": 1024,
                    "per_device_batch_size": 2,
                    "gradient_accumulation_steps": 1,
                    "packing": True,
                },
            },
            "export": {"vllm": {"enabled": False}},
        }
    )
    configure_torch(cfg)
    job = StageJob(
        cfg=cfg,
        stage="sft",
        base_source=model_dir,
        backend=backend,
        console=Console(stderr=True, quiet=True),
        resume="never",
    )
    tok = load_training_tokenizer(model_dir)
    model, peft_settings, _ = sft._setup_model(job, tok)
    train, _ = sft._setup_data(TrainingData(conversations=conversations(16)))
    args = training_arguments(job, has_eval=False, assistant_only_loss=True, packing_strategy="bfd")
    trainer = make_trainer(job, model, tok, args, train, None, peft_settings, callbacks=[])
    return trainer.model, packed_batch(trainer.get_train_dataloader())


def packed_batch(loader: Any) -> dict[str, Any]:
    """The first batch with a row that holds several examples (the order of batches follows the sampler)."""
    first = None
    for batch in loader:
        first = first or batch
        if "packed_seq_lengths" in batch and len(batch["packed_seq_lengths"]) > 1:
            return batch
        if "position_ids" in batch and any(len(segments(row)) > 1 for row in batch["position_ids"].tolist()):
            return batch
    return first


def segments(positions: list[int]) -> list[tuple[int, int]]:
    starts = [i for i, p in enumerate(positions) if p == 0]
    return list(zip(starts, starts[1:] + [len(positions)]))


def positions_from_lengths(lengths: Any, ids: Any) -> Any:
    """Unsloth's padding-free batches give one row and each example's length instead of position ids."""
    import torch

    flat = [int(n) for n in torch.as_tensor(lengths).flatten().tolist()]
    assert ids.shape[0] == 1 and sum(flat) == ids.shape[1], (ids.shape, flat)
    return torch.cat([torch.arange(n) for n in flat]).view(1, -1)


def check(model: Any, batch: dict[str, Any]) -> dict[str, Any]:
    import torch

    device = next(model.parameters()).device
    batch = {k: v.to(device) if hasattr(v, "to") else v for k, v in batch.items()}
    inputs = {k: v for k, v in batch.items() if k != "labels"}
    ids = batch["input_ids"]
    pos = (
        batch["position_ids"]
        if "position_ids" in batch
        else positions_from_lengths(batch["packed_seq_lengths"], ids)
    )
    model.eval()
    rows = []
    with torch.no_grad():
        packed = model(**inputs).logits.float()
        control = model(
            input_ids=ids, position_ids=torch.arange(ids.shape[1], device=device).expand_as(ids)
        ).logits.float()
        for r in range(ids.shape[0]):
            for n, (start, end) in enumerate(segments(pos[r].tolist())):
                alone = model(input_ids=ids[r : r + 1, start:end]).logits[0].float()
                scale = alone.abs().max().item() or 1.0
                rows.append(
                    {
                        "row": r,
                        "example": n,
                        "tokens": end - start,
                        "packed_vs_alone": (packed[r, start:end] - alone).abs().max().item() / scale,
                        "control_vs_alone": (control[r, start:end] - alone).abs().max().item() / scale,
                    }
                )
    return {"batch_shape": list(ids.shape), "keys": sorted(batch), "examples": rows}


def measure(
    model: str = "tiny:test", backend: str = "hf", dtype: str | None = None, tolerance: float | None = None
) -> dict[str, Any]:
    """Build the trainer's first packed batch and compare every packed example with itself alone.

    The result has `worst` (largest packed-vs-alone difference, relative to the largest lone logit),
    `control_min` (the same for a run without example boundaries: must be large) and `packed`.
    """
    import torch

    from bbjtune.models.tiny import build_tiny

    dtype = dtype or ("bfloat16" if torch.cuda.is_available() else "float32")
    tolerance = tolerance or (0.03 if dtype == "bfloat16" else 1e-4)
    model_dir = str(build_tiny(model)) if model.startswith("tiny:") else model
    with tempfile.TemporaryDirectory() as work:
        model_obj, batch = trainer_batch(model_dir, backend, dtype, Path(work))
        if "position_ids" not in batch and "packed_seq_lengths" not in batch:
            return {
                "packed": False,
                "batch_shape": list(batch["input_ids"].shape),
                "keys": sorted(batch),
                "backend": backend,
                "dtype": dtype,
                "tolerance": tolerance,
            }
        # Only now: Unsloth turns packing off for a trainer built while UNSLOTH_RETURN_LOGITS=1 (it reads the
        # variable at init); its forward reads it at every call and returns no logits when given labels without it
        os.environ["UNSLOTH_RETURN_LOGITS"] = "1"
        result = check(model_obj, batch)
    examples = result["examples"]
    later = [e for e in examples if e["example"] > 0]
    result.update(
        packed=True,
        backend=backend,
        dtype=dtype,
        tolerance=tolerance,
        worst=max(e["packed_vs_alone"] for e in examples),
        control_min=min((e["control_vs_alone"] for e in later), default=0.0),
    )
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backend", choices=["hf", "unsloth"], default="hf")
    parser.add_argument("--model", default="tiny:test", help="a model directory or tiny:<preset>")
    parser.add_argument("--dtype", default=None, help="default: bfloat16 on a GPU, float32 on CPU")
    parser.add_argument(
        "--tolerance",
        type=float,
        default=None,
        help="largest relative difference allowed (default: 0.03 in bfloat16, 1e-4 in float32)",
    )
    parser.add_argument("--json", type=Path, help="write the measurements here")
    a = parser.parse_args()
    if a.backend == "unsloth":
        import unsloth  # noqa: F401 — before transformers, as Unsloth requires
    result = measure(a.model, a.backend, a.dtype, a.tolerance)
    if not result["packed"]:
        print(
            f"NOT PACKED: the trainer handed padded rows {result['batch_shape']} "
            f"({', '.join(result['keys'])}); there are no packed examples to check",
            file=sys.stderr,
        )
        sys.exit(2)
    examples, worst, control, tolerance = (
        result["examples"],
        result["worst"],
        result["control_min"],
        result["tolerance"],
    )
    later = [e for e in examples if e["example"] > 0]
    print(
        f"{a.backend} ({result['dtype']}): batch {result['batch_shape']} ({', '.join(result['keys'])}), "
        f"{len(examples)} packed examples; largest packed-vs-alone difference {worst:.2e} "
        f"(tolerance {tolerance:g}); control without boundaries, smallest difference of a later example "
        f"{control:.2e}"
    )
    if a.json:
        a.json.write_text(json.dumps(result, indent=2))
    if worst > tolerance:
        print("FAIL: packed examples see each other", file=sys.stderr)
        sys.exit(1)
    if not later or control <= 10 * tolerance:
        print(
            "INCONCLUSIVE: the control shows no contamination either (no later examples, or too small a model)",
            file=sys.stderr,
        )
        sys.exit(3)


if __name__ == "__main__":
    main()
