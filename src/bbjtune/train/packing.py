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
  a block-diagonal causal mask per row (`masking_utils.find_packed_sequence_indices`).

Either way the first token of an example is never a target of the previous example's last
token (its label is -100), so the loss does not cross examples either.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass
class PackedRowsCollator:
    """Rows stay rows; position ids restart per example; no attention mask; no label across examples."""

    pad_token_id: int
    pad_to_multiple_of: int | None = None

    def __call__(self, examples: list[dict[str, Any]]) -> dict[str, Any]:
        from trl.trainer.sft_trainer import DataCollatorForLanguageModeling

        inner = DataCollatorForLanguageModeling(pad_token_id=self.pad_token_id, padding_free=False,
                                                return_position_ids=True, pad_to_multiple_of=self.pad_to_multiple_of)
        batch = inner(examples)
        # Padding at the end of a short row gets position id 0 per token: each pad is its own one-token
        # "example", attends to nothing else and has no label.
        batch.pop("attention_mask")
        batch["labels"][batch["position_ids"] == 0] = -100
        return batch


def uses_varlen_attention(model: Any) -> bool:
    """True when the model's attention takes flattened batches natively (flash-attention kernels)."""
    config = getattr(model, "config", None)
    implementation = str(getattr(config, "_attn_implementation", "") or "")
    return "flash" in implementation


def install_collator(trainer: Any, packing: bool) -> None:
    """Swap trl's padding-free collator for `PackedRowsCollator` where that is cheaper (SDPA, eager)."""
    if not packing or uses_varlen_attention(trainer.model):
        return
    trainer.data_collator = PackedRowsCollator(pad_token_id=trainer.processing_class.pad_token_id,
                                               pad_to_multiple_of=trainer.args.pad_to_multiple_of)
