"""Small data directories and configs for the training tests (tiny models, a few seconds per run)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from bbjtune.config import RunConfig, validate_config

SYSTEM = "You are a BBj expert. Answer with BBj code."

# (request, answer) pairs: short, distinct, BBj-flavoured; answers end differently so stopping must be learnt.
PAIRS = [
    ("Print hello.", 'PRINT "hello"'),
    ("Open the customer file.", 'chan = unt\nopen (chan)"CUSTOMER"'),
    ("Loop from 1 to 3.", "for i = 1 to 3\n    print i\nnext i"),
    ("Define a string template.", 'dim rec$:"ID:C(6),NAME:C(30)"'),
    ("Close channel 1.", "close (1)"),
    ("Read a record by key.", 'read record (1,key="000100",dom=missing)rec$'),
]

CODE = [
    'rem list customers\nchan = unt\nopen (chan)"CUSTOMER"\nwhile 1\n    read record (chan,end=done)rec$\n'
    "    print rec.name$\nwend\ndone:\nclose (chan)\nend\n",
    "class public Counter\n    field private BBjNumber Count\n    method public void add()\n"
    "        #Count = #Count + 1\n    methodend\nclassend\n",
    'x$ = "BBj"\nprint len(x$), cvs(x$,4)\nfor i = 1 to 10 step 2\n    print str(i:"00")\nnext i\n',
]


def conversation(i: int) -> list[dict[str, str]]:
    request, answer = PAIRS[i % len(PAIRS)]
    return [
        {"role": "system", "content": SYSTEM},
        {"role": "user", "content": request},
        {"role": "assistant", "content": answer},
    ]


def two_turn(i: int) -> list[dict[str, str]]:
    (r1, a1), (r2, a2) = PAIRS[i % len(PAIRS)], PAIRS[(i + 1) % len(PAIRS)]
    return [
        {"role": "system", "content": SYSTEM},
        {"role": "user", "content": r1},
        {"role": "assistant", "content": a1},
        {"role": "user", "content": r2},
        {"role": "assistant", "content": a2},
    ]


def fenced(conv: list[dict[str, str]]) -> list[dict[str, str]]:
    """The conversation with its answer in a ```bbj block, as real answers are."""
    *head, answer = conv
    return [*head, {"role": "assistant", "content": f"Like this:\n\n```bbj\n{answer['content']}\n```"}]


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def data_config(tmp_path: Path, chatml: list[Path], **data: Any) -> RunConfig:
    """A validated config for the data stage alone: tiny:test's tokenizer, the run under tmp_path, nothing
    held out and no eval prompts to decontaminate against unless `data` says otherwise."""
    return validate_config(
        {
            "name": "t",
            "output_dir": str(tmp_path / "run"),
            "model": {"source": "tiny:test"},
            "data": {
                "chatml": [str(p) for p in chatml],
                "heldout_ratio": 0.0,
                "decontaminate_against": [],
                **data,
            },
        }
    )


def write_jsonl(path: Path, rows: list[dict[str, Any] | str]) -> Path:
    """One JSON line per row; a string row is written as it is (a broken line, for the error paths)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(
        "".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows), encoding="utf-8"
    )
    return path


def write_data(
    data_dir: Path, n_train: int = 24, n_heldout: int = 4, n_cpt: int = 12, multi_turn: bool = False
) -> Path:
    """train.jsonl, heldout.jsonl and cpt.jsonl shaped like the data stage's (see INTERFACES.md)."""
    make = two_turn if multi_turn else conversation
    write_jsonl(data_dir / "train.jsonl", [{"messages": make(i), "id": f"{i:016x}"} for i in range(n_train)])
    write_jsonl(
        data_dir / "heldout.jsonl",
        [{"messages": fenced(conversation(i + 1)), "id": f"h{i:015x}"} for i in range(n_heldout)],
    )
    write_jsonl(
        data_dir / "cpt.jsonl",
        [
            {"text": CODE[i % len(CODE)], "source": f"prog{i % len(CODE)}.bbj", "chunk": 0, "n_chunks": 1}
            for i in range(n_cpt)
        ],
    )
    return data_dir


def _set(raw: dict[str, Any], dotted: str, value: Any) -> None:
    *parents, last = dotted.split(".")
    node = raw
    for p in parents:
        node = node.setdefault(p, {})
    node[last] = value


def make_config(tmp_path: Path, model_dir: Path, data_dir: Path | None = None, **overrides: Any) -> RunConfig:
    """A validated config for the tiny model; overrides use double underscores for dots (train__sft__epochs=2)."""
    raw: dict[str, Any] = {
        "name": "t",
        "output_dir": str(tmp_path / "run"),
        "model": {"source": str(model_dir), "kind": "base", "dtype": "float32"},
        "data": {"chatml": ["unused.jsonl"], "output_dir": str(data_dir or tmp_path / "data")},
        "train": {
            "backend": "hf",
            "stages": "sft",
            "lora": {"r": 8, "alpha": 16, "dropout": 0.0},
            "quantization": {"load_in_4bit": False},
            "optim": "adamw_torch",
            "gradient_checkpointing": False,
            "logging_steps": 2,
            "cpu_threads": 1,
            "seed": 0,
            "cpt": {
                "learning_rate": 5e-3,
                "epochs": 1,
                "max_length": 128,
                "per_device_batch_size": 4,
                "gradient_accumulation_steps": 1,
                "warmup_ratio": 0.0,
            },
            "sft": {
                "learning_rate": 5e-3,
                "epochs": 1,
                "max_length": 256,
                "per_device_batch_size": 4,
                "gradient_accumulation_steps": 1,
                "warmup_ratio": 0.0,
            },
        },
        "export": {"vllm": {"enabled": False}},
    }
    for key, value in overrides.items():
        _set(raw, key.replace("__", "."), value)
    return validate_config(raw)


@contextmanager
def one_thread() -> Iterator[None]:
    """torch on one thread inside the block, the caller's thread count restored after it."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def pretrain_base(out_dir: Path, model_dir: Path, steps: int = 300, lr: float = 2e-3) -> Path:
    """A stand-in for a pretrained Base model: tiny:test fully trained on plain text, never on ChatML.

    A random tiny model with frozen random embeddings cannot put much probability on any token, so
    LoRA alone cannot teach it anything quickly; a real Base model knows its language already. This
    one knows the requests and answers as plain text and has never seen <|im_start|>/<|im_end|>.
    """
    import torch

    from bbjtune.models import load_model, load_tokenizer

    torch.manual_seed(0)
    tokenizer = load_tokenizer(str(model_dir))
    model = load_model(str(model_dir), dtype="float32").train()
    texts = [f"{q}\n{a}\n" for q, a in PAIRS] + CODE
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr)
    # One thread, whatever an earlier training left set (train.cpu_threads): float sums in another
    # order gave another base model, and a test after other tests learned differently than alone.
    with one_thread():
        for step in range(steps):
            ids = torch.tensor([tokenizer(texts[step % len(texts)] + "<|endoftext|>")["input_ids"]])
            model(input_ids=ids, labels=ids).loss.backward()
            optimizer.step()
            optimizer.zero_grad()
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    return out_dir


def overfit_chat(
    model_dir: Path,
    messages: list[dict[str, str]],
    out_dir: Path,
    steps: int,
    stop_below: float | None = None,
) -> float:
    """tiny:test trained on one conversation until it answers it and ends its turn; saved to out_dir.

    Returns the last loss (the caller asserts how low it must be). One thread: the model is tiny.
    """
    import torch

    from bbjtune.models import load_model, load_tokenizer

    model = load_model(str(model_dir), dtype="float32").train()
    tok = load_tokenizer(str(model_dir))
    ids = torch.tensor([tok.apply_chat_template(messages, tokenize=True, return_dict=True)["input_ids"]])
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    with one_thread():
        for _ in range(steps):
            loss = model(input_ids=ids, labels=ids).loss
            loss.backward()
            opt.step()
            opt.zero_grad()
            if stop_below is not None and loss.item() < stop_below:
                break
    model.eval().save_pretrained(out_dir)
    tok.save_pretrained(out_dir)
    return loss.item()


def padding_start(ids: Any, labels: Any, pad_id: int, floor: int = 0) -> int:
    """Where the padding at the end of one packed row begins: trailing pad tokens without labels."""
    end = len(ids)
    while end > floor and labels[end - 1] == -100 and ids[end - 1] == pad_id:
        end -= 1
    return end


def build_trainer(cfg, stage="sft", trainer_backend="hf", callbacks=()):
    """The exact trainer `bbjtune train` builds, without training it (the model always loads the hf way);
    (trainer, data, job)."""
    import dataclasses

    from rich.console import Console

    from bbjtune.train import sft
    from bbjtune.train.inputs import load_training_data
    from bbjtune.train.job import StageJob
    from bbjtune.train.model_io import load_training_tokenizer
    from bbjtune.train.trainer import configure_torch, make_trainer, training_arguments

    configure_torch(cfg)
    data = load_training_data(cfg.data_dir, [stage])
    job = StageJob(
        cfg=cfg,
        stage=stage,
        base_source=cfg.model.source,
        backend="hf",
        console=Console(stderr=True, quiet=True),
        resume="never",
    )
    tokenizer = load_training_tokenizer(job.base_source)
    model, peft_settings, _ = sft._setup_model(job, tokenizer)
    train_dataset, eval_dataset = sft._setup_data(data)
    job = dataclasses.replace(job, backend=trainer_backend)
    args = training_arguments(
        job,
        has_eval=eval_dataset is not None,
        assistant_only_loss=cfg.train.sft.assistant_only_loss,
        packing_strategy="bfd",
    )
    trainer = make_trainer(
        job, model, tokenizer, args, train_dataset, eval_dataset, peft_settings, callbacks=list(callbacks)
    )
    return trainer, data, job
