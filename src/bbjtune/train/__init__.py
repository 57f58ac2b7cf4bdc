"""Training: stage 1 (continued pretraining on raw BBj code) and stage 2 (instruction tuning in ChatML).

`bbjtune train CONFIG` (or `bbjtune run`) reads the data stage's files (`train.jsonl`,
`heldout.jsonl`, `cpt.jsonl`), trains LoRA/QLoRA adapters with transformers + peft + trl, and
writes `trained.json`, the handle later stages load through `bbjtune.models.trained.load_trained`.
Each recipe reads top to bottom: `cpt.py`, `sft.py`; the shared setup is in `recipe.py`.
"""
