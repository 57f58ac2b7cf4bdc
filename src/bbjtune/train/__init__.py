"""Training: stage 1 (continued pretraining on raw BBj code) and stage 2 (instruction tuning in ChatML).

`bbjtune train CONFIG` (or `bbjtune run`) reads the data stage's files (`train.jsonl`,
`heldout.jsonl`, `cpt.jsonl`), trains LoRA/QLoRA adapters with transformers + peft + trl, and
writes `trained.json`, the handle later stages load through `bbjtune.models.trained.load_trained`.
Each recipe reads top to bottom: `cpt.py`, `sft.py`. What they share: `job.py` (the stage's job
and processes), `lora.py`, `trainer.py` (trl's arguments, the trainer, the run), `checkpoints.py`
(resume), `model_io.py` (the training tokenizer, saving the adapter); `backends.py` (hf/unsloth),
`memory.py` (the GPU memory estimate), `dryrun.py`, `stage.py` and `cli.py` (`bbjtune train`).
"""
