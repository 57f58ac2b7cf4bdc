"""Packed batches without cross-contamination, for every attention implementation.

trl packs examples into rows of `max_length` tokens (best-fit decreasing) and records each
example's length. How a packed batch reaches the model decides whether examples can see each
other:

- flash-attention (varlen): trl flattens the whole batch into one row and passes position ids
  plus cumulative sequence lengths; the kernel attends within each example only. Nothing to do.
- SDPA / eager: the same flattened row would make transformers build one (batch x max_length)²
  block-diagonal mask — for 8 rows of 1024 tokens a 8192 x 8192 mask, 8x the attention work of
  8 separate rows. `PackedRowsCollator` keeps the rows apart instead: each row carries position
  ids that restart at 0 for every example and no attention mask, from which transformers builds
  a block-diagonal causal mask per row (`masking_utils.find_packed_sequence_indices`). Padding
  continues the last example's positions, so a row with a single example stays on SDPA's causal
  fast path instead of a masked kernel (benchmarks/RESULTS.md, 2026-12-01: before this, with
  shorter inputs as well, the hf backend ran at 0.72x plain HF+PEFT on a 7B QLoRA; after, 0.94x).

- Unsloth: its own padding-free batches and varlen attention (see `install_collator`).

Either way the first token of an example is never a target of the previous example's last
token (its label is -100), so the loss does not cross examples either.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from bbjtune.errors import BbjtuneError


@dataclass
class PackedRowsCollator:
    """Rows stay rows; position ids restart per example; no attention mask; no label across examples."""

    pad_token_id: int
    pad_to_multiple_of: int | None = None

    def __call__(self, examples: list[dict[str, Any]]) -> dict[str, Any]:
        from trl.trainer.sft_trainer import DataCollatorForLanguageModeling

        inner = DataCollatorForLanguageModeling(
            pad_token_id=self.pad_token_id,
            padding_free=False,
            return_position_ids=True,
            pad_to_multiple_of=self.pad_to_multiple_of,
        )
        batch = inner(examples)
        positions, labels = batch["position_ids"], batch["labels"]
        labels[positions == 0] = -100
        # Padding sits at the end of a short row. It continues the positions of the row's last example
        # instead of restarting at 0: causal attention never lets a real token see a later pad, pads have
        # no label, and a row holding one example then looks unpacked to transformers, which keeps
        # SDPA's fast causal kernel for it (restarting pads would make every short row "packed").
        pads = batch.pop("attention_mask") == 0
        if pads.any():
            real = (~pads).sum(dim=1, keepdim=True)  # right padding: the first `real` tokens of each row
            last = positions.gather(1, (real - 1).clamp(min=0))
            steps = positions.new_tensor(range(positions.shape[1])).expand_as(positions) - real + 1
            positions[pads] = (last + steps)[pads]
            labels[pads] = -100
        return batch


def uses_varlen_attention(model: Any) -> bool:
    """True when the model's attention takes flattened batches natively (flash-attention kernels)."""
    config = getattr(model, "config", None)
    implementation = str(getattr(config, "_attn_implementation", "") or "")
    return "flash" in implementation


def install_collator(trainer: Any, packing: bool, backend: str = "hf") -> None:
    """Swap trl's padding-free collator for `PackedRowsCollator` where that is cheaper (SDPA, eager).

    Never under the unsloth backend: Unsloth wraps trl's padding-free collator so that each batch is
    one flattened row plus `packed_seq_lengths`, which its attention turns into varlen kernels. Its
    model forward infers example boundaries from position ids only for a batch of one row, so
    several packed rows without that key would be attended as one causal sequence each: examples
    would see their neighbours (Unsloth 2026.10's `LlamaModel_fast_forward`).
    """
    if not packing:
        return
    if backend == "unsloth":
        check_one_row_batches(trainer)
        return
    if uses_varlen_attention(trainer.model):
        return
    trainer.data_collator = PackedRowsCollator(
        pad_token_id=trainer.processing_class.pad_token_id, pad_to_multiple_of=trainer.args.pad_to_multiple_of
    )


def check_one_row_batches(trainer: Any) -> None:
    """Under Unsloth, stop before training unless a packed batch keeps its examples' boundaries.

    Safe batches are one flattened row that carries `packed_seq_lengths` (Unsloth's collator), or
    one row with position ids and no attention mask (Unsloth derives the boundaries from them). A
    future Unsloth that batches packed rows any other way would let examples see each other.
    """

    dataset = trainer.train_dataset
    batch = trainer.data_collator([dataset[i] for i in range(min(2, len(dataset)))])
    ids = batch["input_ids"]
    one_row = ids.shape[0] == 1 and "attention_mask" not in batch and "position_ids" in batch
    if "packed_seq_lengths" in batch or one_row:
        return
    raise BbjtuneError(
        f"with this Unsloth version packed batches arrive as {ids.shape[0]} rows without example "
        "boundaries Unsloth's attention reads, so packed conversations would see each other",
        "set train.backend: hf (or train.sft.packing: false) and report the Unsloth version",
    )
