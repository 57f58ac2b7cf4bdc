"""Stage 2 (SFT) on the tiny model: what is trained on, packing boundaries, stopping, saved artifacts."""

from __future__ import annotations

import json

import pytest
import torch
from rich.console import Console
from train_helpers import PAIRS, SYSTEM, build_trainer, conversation, make_config, padding_start, write_data

from bbjtune.models.chat_template import ENDOFTEXT, IM_END, IM_START
from bbjtune.train import sft
from bbjtune.train.model_io import load_training_tokenizer
from bbjtune.train.dryrun import tokenize_conversation

pytestmark = pytest.mark.slow  # trains tiny models: `make test` runs it, `make test-fast` leaves it out


@pytest.fixture(scope="module")
def unpacked(tmp_path_factory, tiny_model_dir):
    tmp = tmp_path_factory.mktemp("sft-unpacked")
    write_data(tmp / "data", n_train=6, multi_turn=True)
    cfg = make_config(tmp, tiny_model_dir, train__sft__packing=False)
    return build_trainer(cfg)[:2]


def test_trained_span_is_exactly_each_answer_and_its_im_end(unpacked):
    trainer, data = unpacked
    tokenizer = trainer.processing_class
    for row, conv in zip(trainer.train_dataset, data.conversations):
        ids, labels = row["input_ids"], row["labels"]
        spans, current = [], []
        for token, label in zip(ids, labels):
            if label != -100:
                assert label == token  # labels are the inputs; the trainer shifts them
                current.append(token)
            elif current:
                spans.append(current)
                current = []
        if current:
            spans.append(current)
        answers = [m["content"] + IM_END for m in conv if m["role"] == "assistant"]
        assert [tokenizer.decode(s) for s in spans] == answers
        # system prompt, user turns and the "<|im_start|>assistant\n" headers are context only
        assert SYSTEM not in tokenizer.decode([t for t, lab in zip(ids, labels) if lab != -100])


def test_dry_run_shows_the_trainers_mask(unpacked):
    trainer, data = unpacked
    for row, conv in zip(trainer.train_dataset, data.conversations):
        ids, mask = tokenize_conversation(trainer.processing_class, conv)
        assert ids == row["input_ids"]
        assert [int(label != -100) for label in row["labels"]] == mask


def test_full_sequence_loss_when_assistant_only_is_off(tmp_path, tiny_model_dir):
    write_data(tmp_path / "data", n_train=4)
    cfg = make_config(
        tmp_path, tiny_model_dir, train__sft__packing=False, train__sft__assistant_only_loss=False
    )
    trainer, _, _ = build_trainer(cfg)
    row = trainer.train_dataset[0]
    assert row["labels"] == row["input_ids"]


def test_packing_keeps_examples_apart(tmp_path, tiny_model_dir):
    write_data(tmp_path / "data", n_train=12)
    cfg = make_config(
        tmp_path, tiny_model_dir, train__sft__max_length=96, train__sft__per_device_batch_size=2
    )
    trainer, data, _ = build_trainer(cfg)
    tokenizer = trainer.processing_class
    batch = next(iter(trainer.get_train_dataloader()))
    assert "attention_mask" not in batch  # the mask comes from the position ids: block-diagonal per row
    ids, pos, labels = batch["input_ids"], batch["position_ids"], batch["labels"]
    assert ids.shape == pos.shape == labels.shape and ids.shape[0] == 2

    model = trainer.model.eval()
    im_start = tokenizer.convert_tokens_to_ids(IM_START)
    checked = 0
    for r in range(ids.shape[0]):
        starts = (pos[r] == 0).nonzero().flatten().tolist()
        assert all(ids[r, s] == im_start for s in starts)  # only examples restart positions, never padding
        assert len(starts) >= 2, "rows should hold several packed examples"
        assert all(labels[r, s] == -100 for s in starts)  # no target across an example boundary
        with torch.no_grad():
            packed = model(input_ids=ids[r : r + 1], position_ids=pos[r : r + 1]).logits[0]
        text_end = padding_start(
            ids[r], labels[r], tokenizer.pad_token_id, floor=starts[-1]
        )  # then the padding
        for start, end in zip(starts, starts[1:] + [text_end]):
            assert pos[r, start:end].tolist() == list(range(end - start))  # positions restart per example
            alone_ids = ids[r : r + 1, start:end]
            with torch.no_grad():
                alone = model(input_ids=alone_ids).logits[0]
            assert torch.allclose(packed[start:end], alone, atol=1e-4), "an example saw its neighbour"
            text = tokenizer.decode(alone_ids[0])
            assert text.startswith(IM_START + "system\n" + SYSTEM) and text.endswith(IM_END + "\n")
            checked += 1
    assert checked >= 4


def test_unsloth_keeps_its_padding_free_batches_and_refuses_others(tmp_path, tiny_model_dir):
    """Unsloth's attention keeps packed examples apart only in its own one-row batches: no row collator there,
    and if Unsloth ever batched packed rows without boundaries it reads, training must not start."""
    from bbjtune.errors import BbjtuneError
    from bbjtune.train.packing import PackedRowsCollator, check_one_row_batches

    write_data(tmp_path / "data", n_train=12)
    cfg = make_config(
        tmp_path, tiny_model_dir, train__sft__max_length=96, train__sft__per_device_batch_size=2
    )
    hf, _, _ = build_trainer(cfg)
    assert isinstance(hf.data_collator, PackedRowsCollator)
    unsloth, _, _ = build_trainer(cfg, trainer_backend="unsloth")  # the collator is the point
    assert not isinstance(unsloth.data_collator, PackedRowsCollator) and unsloth.data_collator.padding_free
    batch = next(iter(unsloth.get_train_dataloader()))
    assert batch["input_ids"].shape[0] == 1  # one flattened row; the examples' boundaries travel with it

    check_one_row_batches(unsloth)  # trl's padding-free batches: one row, positions, no mask
    unsloth.data_collator = PackedRowsCollator(pad_token_id=unsloth.processing_class.pad_token_id)
    with pytest.raises(BbjtuneError, match="would see each other"):
        check_one_row_batches(unsloth)  # several rows: Unsloth would attend across examples


def test_padding_keeps_single_example_rows_unpacked(tiny_model_dir):
    """A row holding one example plus padding must look unpacked (SDPA's causal fast path) and stay exact."""
    from transformers import AutoModelForCausalLM
    from transformers.masking_utils import find_packed_sequence_indices

    from bbjtune.train.packing import PackedRowsCollator

    pad = 0
    long_row = {"input_ids": list(range(5, 17)), "seq_lengths": [12]}
    short_row = {"input_ids": list(range(20, 27)), "seq_lengths": [7]}
    batch = PackedRowsCollator(pad_token_id=pad)(
        [{**long_row, "labels": long_row["input_ids"]}, {**short_row, "labels": short_row["input_ids"]}]
    )
    assert batch["position_ids"][1].tolist() == list(range(12))  # the 5 pads continue the positions
    assert batch["input_ids"][1, 7:].tolist() == [pad] * 5 and (batch["labels"][1, 7:] == -100).all()
    assert find_packed_sequence_indices(batch["position_ids"]) is None  # no block mask: the fast path

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval()
    with torch.no_grad():
        padded = model(input_ids=batch["input_ids"], position_ids=batch["position_ids"]).logits[1, :7]
        alone = model(input_ids=torch.tensor([short_row["input_ids"]])).logits[0]
    assert torch.allclose(padded, alone, atol=1e-5)

    packed = PackedRowsCollator(pad_token_id=pad)(
        [
            {"input_ids": list(range(5, 14)), "seq_lengths": [4, 5], "labels": list(range(5, 14))},
            {**short_row, "labels": short_row["input_ids"]},
        ]
    )
    assert packed["position_ids"][0].tolist() == [0, 1, 2, 3, 0, 1, 2, 3, 4]
    assert packed["position_ids"][1].tolist() == list(range(9))
    assert packed["labels"][0, 4] == -100  # the second example's first token is not a target of the first


def generate_answers(model, tokenizer, max_new_tokens):
    """Greedy answers to each request of PAIRS: (generated ids, expected answer)."""
    results = []
    for i in range(len(PAIRS)):
        prompt = [m for m in conversation(i) if m["role"] != "assistant"]
        inputs = tokenizer.apply_chat_template(
            prompt, add_generation_prompt=True, return_tensors="pt", return_dict=True
        )
        with torch.no_grad():
            out = model.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=False)
        results.append((out[0, inputs["input_ids"].shape[1] :], conversation(i)[-1]["content"]))
    return results


def test_trained_model_stops_at_im_end(tmp_path, tiny_model_dir):
    """Stage 2 teaches a Base model (which never saw ChatML) to end each answer with <|im_end|>, and stop there."""
    from train_helpers import pretrain_base
    from transformers import GenerationConfig

    from bbjtune.models import load_model, load_tokenizer
    from bbjtune.models.trained import load_trained
    from bbjtune.train.stage import run_stage

    base_dir = pretrain_base(tmp_path / "base", tiny_model_dir)
    base, base_tokenizer = load_model(str(base_dir), dtype="float32").eval(), load_tokenizer(str(base_dir))
    im_end = base_tokenizer.convert_tokens_to_ids(IM_END)
    base.generation_config = GenerationConfig(eos_token_id=[im_end], pad_token_id=base_tokenizer.pad_token_id)
    stops_before = sum(out[-1].item() == im_end for out, _ in generate_answers(base, base_tokenizer, 40))
    assert stops_before == 0, (
        "the Base model already ends answers with <|im_end|>; the test would prove nothing"
    )

    write_data(tmp_path / "data", n_train=48, n_heldout=2)
    cfg = make_config(
        tmp_path,
        base_dir,
        train__sft__epochs=20,
        train__sft__learning_rate=5e-3,
        train__lora__r=16,
        train__lora__alpha=32,
        train__sft__per_device_batch_size=4,
        train__logging_steps=20,
    )
    run_stage(cfg, console=Console(stderr=True, quiet=True))

    model, tokenizer = load_trained(cfg.train_dir)
    assert tokenizer.eos_token == IM_END
    assert sorted(model.generation_config.eos_token_id) == sorted(
        tokenizer.convert_tokens_to_ids([IM_END, ENDOFTEXT])
    )
    exact = 0
    answers = generate_answers(model, tokenizer, 60)
    for out, answer in answers:
        text = tokenizer.decode(out)
        assert out[-1].item() == im_end, f"did not stop: {text!r}"
        assert len(out) <= 2 * len(tokenizer(answer)["input_ids"]) + 4, f"stopped too late: {text!r}"
        exact += text == answer + IM_END
    assert exact >= len(PAIRS) // 2, "the answers themselves were not learnt"
    check = json.loads((cfg.train_dir / "sft" / "manifest.json").read_text())["metrics"]["stop_check"]
    assert check["of"] == 2 and check["stopped"] == 2  # the stage's own check on the held-out requests
    # the check's one padded batch stops each answer where answering one request at a time stops it
    from types import SimpleNamespace

    convs = [conversation(i) for i in range(len(PAIRS))]
    batched = sft.stop_check(model, tokenizer, SimpleNamespace(heldout=convs, conversations=[]), len(PAIRS))
    assert batched == {
        "stopped": len(PAIRS),
        "of": len(PAIRS),
        "answer_tokens": [len(out) for out, _ in answers],
    }
    assert len({len(out) for out, _ in answers}) > 1  # answers of different lengths share the batch


def test_saved_adapter_and_handle(tmp_path, tiny_model_dir):
    from bbjtune.models.trained import read_trained
    from bbjtune.train.stage import run_stage

    write_data(tmp_path / "data", n_train=8)
    cfg = make_config(tmp_path, tiny_model_dir, train__sft__max_steps=2, train__report_to=["tensorboard"])
    run_stage(cfg, console=Console(stderr=True, quiet=True))
    handle = json.loads((cfg.train_dir / "trained.json").read_text())
    assert set(handle) >= {
        "base_model",
        "original_model",
        "adapter",
        "tokenizer",
        "stages",
        "lora",
        "modules_to_save",
        "trainable_token_indices",
        "max_length",
        "system_prompt",
    }
    assert handle["stages"] == ["sft"] and handle["system_prompt"] == SYSTEM and handle["max_length"] == 256
    assert handle["lora"]["r"] == 8 and handle["modules_to_save"] == []
    assert handle["trainable_token_indices"] == sorted(
        load_tokenizer_ids(handle["tokenizer"], [IM_START, IM_END])
    )  # Base model: the chat-token rows train
    adapter = read_trained(cfg.train_dir).adapter
    card = (adapter / "README.md").read_text()
    from bbjtune.artifacts import sha256_file

    assert sha256_file(cfg.data_dir / "train.jsonl") in card and "Merge before serving" in card
    from bbjtune.models import load_tokenizer

    saved, original = load_tokenizer(str(adapter)), load_tokenizer(str(tiny_model_dir))
    sample = conversation(0)
    assert saved.apply_chat_template(sample, tokenize=True) == original.apply_chat_template(
        sample, tokenize=True
    )
    gen = json.loads((adapter / "generation_config.json").read_text())
    assert len(gen["eos_token_id"]) == 2
    rows = [json.loads(line) for line in (cfg.train_dir / "metrics.jsonl").read_text().splitlines()]
    assert rows and all(r["stage"] == "sft" for r in rows)
    assert any("loss" in r for r in rows) and any("eval_loss" in r for r in rows)
    manifest = json.loads((cfg.train_dir / "sft" / "manifest.json").read_text())
    assert manifest["status"] == "complete" and manifest["metrics"]["steps"] == 2
    assert manifest["gradient_checkpointing"] is cfg.train.gradient_checkpointing  # what ran
    assert not (cfg.train_dir / "sft" / "checkpoints").exists()  # removed once the stage is complete
    assert list((cfg.train_dir / "tensorboard" / "sft").glob("events.out.tfevents.*"))


def load_tokenizer_ids(path, tokens):
    from bbjtune.models import load_tokenizer

    tok = load_tokenizer(path)
    return [tok.convert_tokens_to_ids(t) for t in tokens]


def test_stop_check_in_one_batch_finds_what_answering_one_at_a_time_finds(tiny_model_dir):
    """The stop check batches its requests (left padding); each answer keeps its own token budget."""
    from types import SimpleNamespace

    from transformers import AutoModelForCausalLM

    tokenizer = load_training_tokenizer(str(tiny_model_dir))
    model = AutoModelForCausalLM.from_pretrained(str(tiny_model_dir), dtype=torch.float32)
    # prompts of different lengths, so the batch pads; one reference short enough to cut its answer early
    convs = [conversation(i) for i in range(3)]
    convs[1][1]["content"] += " Explain it in detail, step by step, please."
    convs[1][2]["content"] = "OK"
    result = sft.stop_check(model, tokenizer, SimpleNamespace(heldout=convs, conversations=[]), 3)
    stop_ids = tokenizer.convert_tokens_to_ids([IM_END, ENDOFTEXT])
    want_stopped, want_lengths = 0, []
    for conv in convs:  # the reference: one request at a time, each with its own budget
        budget = min(int(1.5 * len(tokenizer(conv[-1]["content"])["input_ids"])) + 16, 2048)
        ids = tokenizer.apply_chat_template(
            conv[:-1], add_generation_prompt=True, return_tensors="pt", return_dict=True
        )
        with torch.no_grad():
            out = model.generate(
                **ids,
                max_new_tokens=budget,
                do_sample=False,
                eos_token_id=stop_ids,
                pad_token_id=tokenizer.pad_token_id,
            )
        new = out[0, ids["input_ids"].shape[1] :].tolist()
        want_stopped += new[-1] in stop_ids
        want_lengths.append(len(new))
    assert result == {"stopped": want_stopped, "of": 3, "answer_tokens": want_lengths}
    assert len(set(want_lengths)) > 1  # the budgets differ: the batch did not cut every row alike
