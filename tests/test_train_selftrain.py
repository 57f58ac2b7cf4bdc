"""Self-training after SFT on the tiny model: verdicts, prompts, resumable sampling, RFT, DPO, KTO, GRPO."""

from __future__ import annotations

import json

import pytest
from rich.console import Console
from train_helpers import SYSTEM, conversation, fenced, make_config, write_data, write_jsonl

from bbjtune.artifacts import read_complete_jsonl
from bbjtune.models.generate import TransformersBackend
from bbjtune.train import preference, selftrain, verdict
from bbjtune.train.callbacks import MetricsLog
from bbjtune.train.job import StageJob
from bbjtune.train.samples import (
    FRESH,
    SAMPLES_FILE,
    SelfPrompt,
    read_samples,
    sample_prompts,
    training_prompts,
)

GOOD = '```bbj\nch = unt\nopen (ch)"notes.txt"\nread (ch,end=done)x$\ndone:\nclose (ch)\nend\n```'
MUST = [r"(?i)(?<![\w.])OPEN\b", r"(?i)(?<![\w.])READ\b", r"(?i)(?<![\w.])CLOSE\b", r"(?i)\bEND\s*="]
QUIET = Console(stderr=True, quiet=True)


def sampling(**kw):
    from bbjtune.config import SelfSampleConfig

    return SelfSampleConfig(**{"samples_per_prompt": 2, "max_new_tokens": 8, "batch_tokens": 2048, **kw})


# ----------------------------------------------------------------------------- verdicts


def test_verdicts_on_clean_broken_runaway_and_off_task_answers():
    good = verdict.judge(GOOD, MUST, compiler="builtin")
    assert good.compiles and good.clean and good.pattern_share == 1.0 and good.passed and not good.failed
    assert good.reward == 3.0
    python = verdict.judge(
        "```python\nwith open('notes.txt') as f:\n    print(f.read())\n```", MUST, compiler="builtin"
    )
    assert not python.compiles and python.failed and not python.passed
    ran_on = verdict.judge(GOOD, MUST, finish_reason="length", compiler="builtin")
    assert ran_on.clean and ran_on.failed and not ran_on.passed and ran_on.reward == 2.0
    off_task = verdict.judge('```bbj\nprint "hello"\nend\n```', MUST, compiler="builtin")
    assert off_task.clean and not off_task.patterns_ok and not off_task.passed and not off_task.failed


def test_tier_two_verdicts_use_assess():
    from bbjtune.bbj.quality import assess

    code = 'sysgui! = BBjAPI().openSysGui("X0")\nwin! = sysgui!.addBbjEditBox(1,2,3)\nend\n'
    expected = assess(code)
    got = verdict.judge(f"```bbj\n{code}```", [], compiler="builtin")
    assert got.clean == bool(expected.compiles and expected.clean)
    assert got.findings == [str(f) for f in expected.findings]
    assert not got.clean and any("addBbjEditBox" in f for f in got.findings)  # no such BBjAPI method


# ----------------------------------------------------------------------------- prompts


def test_prompts_are_decontaminated_like_the_data_stage_and_need_code(tmp_path, tiny_model_dir):
    data_dir = write_data(tmp_path / "data", n_train=6, n_heldout=1)  # held out: the prompt of PAIRS[1]
    evals = write_jsonl(tmp_path / "evals.jsonl", [{"id": "e1", "prompt": conversation(2)[1]["content"]}])
    extra = write_jsonl(
        tmp_path / "derived.jsonl",
        [
            {
                "messages": fenced(
                    [
                        {"role": "user", "content": "Write the customer list program in full."},
                        {"role": "assistant", "content": 'open (1)"CUST"\nclose (1)'},
                    ]
                )
            },
            {
                "messages": [
                    {"role": "user", "content": "What is BBj?"},
                    {"role": "assistant", "content": "A Business BASIC dialect by BASIS."},
                ]
            },
        ],
    )
    cfg = make_config(tmp_path, tiny_model_dir, data_dir, data__decontaminate_against=[str(evals)])
    from bbjtune.train.inputs import load_conversations

    found = training_prompts(
        cfg, load_conversations(data_dir / "train.jsonl"), sampling(extra_prompts=[str(extra)])
    )
    asked = {p.context[-1]["content"] for p in found.prompts}
    assert conversation(1)[1]["content"] not in asked and conversation(2)[1]["content"] not in asked
    assert "Write the customer list program in full." in asked and "What is BBj?" not in asked
    assert found.skipped["overlaps an eval or held-out prompt"] == 2
    assert found.skipped["reference has no BBj code"] == 1
    assert all(p.context[0]["content"] == SYSTEM for p in found.prompts if p.context[0]["role"] == "system")
    some = training_prompts(
        cfg, load_conversations(data_dir / "train.jsonl"), sampling(extra_prompts=[str(extra)], max_prompts=2)
    )
    again = training_prompts(
        cfg, load_conversations(data_dir / "train.jsonl"), sampling(extra_prompts=[str(extra)], max_prompts=2)
    )
    assert len(some.prompts) == 2 and [p.id for p in some.prompts] == [p.id for p in again.prompts]
    assert {p.id for p in some.prompts} < {p.id for p in found.prompts}


# ----------------------------------------------------------------------------- sampling


class Interrupted(RuntimeError):
    pass


class StopsAfter:
    """The real backend, killed after `n` prompts (as a run stopped with Ctrl-C would be)."""

    def __init__(self, backend, n):
        self.backend, self.n, self.asked = backend, n, []

    def generate(self, requests, settings):
        self.asked.append([r.meta["id"] for r in requests])
        for k, item in enumerate(self.backend.generate(requests, settings)):
            if k == self.n:
                raise Interrupted
            yield item


def test_sampling_resumes_where_it_stopped(tmp_path, tiny_model_dir):
    backend = TransformersBackend.load(str(tiny_model_dir), dtype="float32", batch_tokens=256)
    prompts = [SelfPrompt(f"p{i}", conversation(i)[:2], GOOD, MUST) for i in range(5)]
    path = tmp_path / SAMPLES_FILE
    killed = StopsAfter(backend, 2)
    with pytest.raises(Interrupted):
        sample_prompts(killed, prompts, sampling(), path, seed=1)
    first = read_samples(path)
    assert len(first) == 4 and {r["prompt_id"] for r in first} <= {p.id for p in prompts}
    with open(path, "a", encoding="utf-8") as fh:
        fh.write('{"prompt_id": "p4", "sample": 0, "outp')  # torn by the kill
    resumed = StopsAfter(backend, 99)
    rows = sample_prompts(resumed, prompts, sampling(), path, seed=1)
    assert sorted(resumed.asked[0]) == sorted({p.id for p in prompts} - {r["prompt_id"] for r in first})
    assert len(rows) == 10 and rows[:4] == first
    assert read_samples(path) == rows and all("reward" in r["verdict"] for r in rows)
    again = StopsAfter(backend, 99)
    assert sample_prompts(again, prompts, sampling(), path, seed=1) == rows and again.asked == []


def test_a_greedy_answer_joins_the_samples_and_resumes_on_its_own(tmp_path, tiny_model_dir):
    """sampling.greedy: sample k is the temperature-0 answer, the one an evaluation sees."""
    from bbjtune.models.generate import Request, Sampling

    backend = TransformersBackend.load(str(tiny_model_dir), dtype="float32", batch_tokens=256)
    prompts = [SelfPrompt(f"p{i}", conversation(i)[:2], GOOD, MUST) for i in range(3)]
    path = tmp_path / SAMPLES_FILE
    killed = StopsAfter(
        backend, 1
    )  # the k samples of all prompts are written, then the greedy pass is killed
    calls = []

    class Both:
        def generate(self, requests, settings):
            calls.append(settings.temperature)
            source = killed if settings.temperature == 0 else backend
            yield from source.generate(requests, settings)

    with pytest.raises(Interrupted):
        sample_prompts(Both(), prompts, sampling(greedy=True), path, seed=1)
    first = read_samples(path)
    assert len(first) == 7 and calls == [0.8, 0.0]  # 3 x 2 samples, then one greedy answer before the kill
    (got,) = [r["prompt_id"] for r in first if r["sample"] == 2]
    resumed = StopsAfter(backend, 99)
    rows = sample_prompts(resumed, prompts, sampling(greedy=True), path, seed=1)
    assert [sorted(a) for a in resumed.asked] == [
        sorted({"p0", "p1", "p2"} - {got})
    ]  # only the missing greedy
    assert len(rows) == 9 and sorted(r["sample"] for r in rows if r["prompt_id"] == "p1") == [0, 1, 2]
    want = dict(
        backend.generate([Request(messages=prompts[1].context)], Sampling(temperature=0.0, max_new_tokens=8))
    )
    greedy_p1 = next(r for r in rows if (r["prompt_id"], r["sample"]) == ("p1", 2))
    assert greedy_p1["output"] == want[0][0].text and "verdict" in greedy_p1
    stats = selftrain.greedy_stats(rows, 2)
    assert stats["samples"] == 3 and 0.0 <= stats["pass_rate"] <= 1.0
    assert selftrain.greedy_stats([r for r in rows if r["sample"] < 2], 2) is None


def test_a_round_with_greedy_answers_loads_the_model_once_and_times_both_passes(
    tmp_path, tiny_model_dir, monkeypatch
):
    # The greedy pass loaded the model a second time (the first copy left in memory) and the round's
    # tokens/s counted only the greedy answers: on one H100, 80,644 tokens of 4,518 answers.
    cfg = make_config(tmp_path, tiny_model_dir, train__stages=["sft", "dpo"])
    job = selftrain.RoundJob(
        cfg=cfg, stage="dpo", base_source=str(tiny_model_dir), backend="hf", console=QUIET
    )
    loads = []
    real_load = TransformersBackend.load.__func__

    def counting_load(cls, *args, **kwargs):
        backend = real_load(cls, *args, **kwargs)
        loads.append(backend)
        return backend

    monkeypatch.setattr(TransformersBackend, "load", classmethod(counting_load))
    prompts = [SelfPrompt(f"p{i}", conversation(i)[:2], GOOD, MUST) for i in range(3)]
    rows, speed = selftrain._sample(job, prompts, sampling(greedy=True))
    assert len(rows) == 9 and len(loads) == 1
    assert speed["generated_tokens"] == sum(r["tokens"] for r in rows) > 0


def test_token_budget_batches_give_the_same_greedy_answers(tiny_model_dir):
    from bbjtune.models.generate import Request, Sampling

    fixed = TransformersBackend.load(str(tiny_model_dir), dtype="float32", batch_size=1)
    budget = TransformersBackend(fixed.model, fixed.tokenizer, batch_tokens=200)
    static = TransformersBackend(fixed.model, fixed.tokenizer, batch_tokens=200, static_cache=True)
    requests = [Request(messages=conversation(i)[:2]) for i in range(6)]
    settings = Sampling(temperature=0.0, max_new_tokens=6)
    lengths = [len(fixed.tokenizer(fixed.render(r))["input_ids"]) for r in requests]
    batches = list(budget._batches(sorted(range(6), key=lambda i: -lengths[i]), lengths, requests, settings))
    assert len(batches) > 1 and all(
        len(b) * (max(lengths[i] for i in b) + 6) <= 200 or len(b) == 1 for b in batches
    )
    one = {i: [c.text for c in cs] for i, cs in fixed.generate(requests, settings)}
    assert {i: [c.text for c in cs] for i, cs in budget.generate(requests, settings)} == one
    assert {i: [c.text for c in cs] for i, cs in static.generate(requests, settings)} == one


def test_refill_gives_the_padded_batches_greedy_answers_and_k_samples(tiny_model_dir):
    """sampling.engine refill: segments of a few tokens, ended rows replaced by waiting ones."""
    from bbjtune.models.generate import Request, Sampling

    fixed = TransformersBackend.load(str(tiny_model_dir), dtype="float32", batch_size=8)
    requests = [Request(messages=conversation(i)[:2]) for i in range(6)]
    requests[4].max_new_tokens = 5  # another limit: its own group
    # greedy with a strong repetition penalty: the tiny model's answers differ (plain greedy repeats one token)
    settings = Sampling(temperature=0.0, max_new_tokens=12, repeat_penalty=3.0)
    first = {i: cs[0] for i, cs in fixed.generate(requests, settings)}
    # tokens the greedy answers write at different places end them there: rows end at different times
    third = {fixed.tokenizer(first[i].text, add_special_tokens=False)["input_ids"][2] for i in (0, 2)}
    fixed.stop_ids = sorted({*fixed.stop_ids, *third})
    want = {
        i: [(c.text, c.finish_reason, c.tokens) for c in cs] for i, cs in fixed.generate(requests, settings)
    }
    assert len({t for ((_, _, t),) in want.values()}) > 2 and any(
        f == "stop" for ((_, f, _),) in want.values()
    )
    refill = TransformersBackend(fixed.model, fixed.tokenizer, batch_tokens=150, refill_segment=3)
    refill.stop_ids = fixed.stop_ids
    shapes = []  # (rows, longest text, new tokens) of every segment
    real = fixed.model.generate

    def generate(**kw):
        shapes.append((*kw["input_ids"].shape, kw["max_new_tokens"]))
        return real(**kw)

    fixed.model.generate = generate
    try:
        got = {
            i: [(c.text, c.finish_reason, c.tokens) for c in cs]
            for i, cs in refill.generate(requests, settings)
        }
    finally:
        del fixed.model.generate
    assert got == want
    assert all(rows * (width + new) <= 150 or rows == 1 for rows, width, new in shapes)  # within the budget
    assert len(shapes) > 4 and len({rows for rows, _, _ in shapes}) > 1  # segments, rows refilled and shed
    assert refill.describe()["refill_segment"] == 3 and "refill_segment" not in fixed.describe()

    sampled = dict(refill.generate(requests[:3], Sampling(temperature=0.8, max_new_tokens=7, n=3, seed=1)))
    assert sorted(sampled) == [0, 1, 2] and all(len(cs) == 3 for cs in sampled.values())
    assert all(c.error is None and 0 < c.tokens <= 7 for cs in sampled.values() for c in cs)
    assert len({c.text for cs in sampled.values() for c in cs}) > 3  # sampled, not one answer copied


def test_switching_the_sampling_engine_keeps_the_samples_already_drawn():
    from bbjtune.config import SelfSampleConfig

    def record(**kw):
        return {"sampling": SelfSampleConfig(**kw).model_dump(mode="json"), "start": "abc"}

    same = selftrain._what_is_drawn
    assert same(record()) == same(record(engine="refill", segment_tokens=64, batch_tokens=4096))
    assert same(record()) != same(record(temperature=0.5)) and same(record()) != same(record(greedy=True))
    assert same({}) != same(record())  # no record yet: sample


@pytest.mark.slow
def test_continuous_batching_returns_k_answers_per_prompt(tiny_model_dir):
    # transformers' continuous batching is built for GPUs: ~30 s for this on a CPU
    from bbjtune.models.generate import Request, Sampling

    backend = TransformersBackend.load(str(tiny_model_dir), dtype="float32", continuous=True)
    requests = [Request(messages=conversation(i)[:2]) for i in range(3)]
    got = dict(backend.generate(requests, Sampling(temperature=0.8, max_new_tokens=5, n=3, seed=1)))
    assert sorted(got) == [0, 1, 2] and all(len(c) == 3 for c in got.values())
    assert all(
        c.error is None and 0 < c.tokens <= 5 and c.finish_reason in ("stop", "length")
        for cs in got.values()
        for c in cs
    )
    assert len({c.text for cs in got.values() for c in cs}) > 1  # sampled, not one answer copied


def test_continuous_batching_that_returns_nothing_stops_with_what_to_do(tiny_model_dir, monkeypatch):
    # On one H200 (transformers 5.17) generate_batch returned an empty result and no error for 2,048
    # answers; a self-training round would have judged 2,048 failed answers. Replayed here.
    from bbjtune.errors import BbjtuneError
    from bbjtune.models.generate import Request, Sampling

    backend = TransformersBackend.load(str(tiny_model_dir), dtype="float32", continuous=True)
    monkeypatch.setattr(backend.model, "generate_batch", lambda *a, **k: {})
    with pytest.raises(BbjtuneError) as err:
        list(backend.generate([Request(messages=conversation(0)[:2])], Sampling(n=2, max_new_tokens=4)))
    assert "returned no answers" in str(err.value) and "engine: batched" in err.value.hint


# ----------------------------------------------------------------------------- building the data


def row(pid, sample, output, v):
    return {"prompt_id": pid, "sample": sample, "output": output, "error": None, "verdict": v.to_dict()}


def test_rft_keeps_the_best_passing_answer_and_dpo_pairs_pass_with_fail(tmp_path, tiny_model_dir):
    cfg = make_config(tmp_path, tiny_model_dir, train__stages=["sft", "rft", "dpo"])
    prompts = [
        SelfPrompt("a", conversation(0)[:2], "REF-A", MUST),
        SelfPrompt("b", conversation(1)[:2], "REF-B", MUST, FRESH),
    ]

    def judge(text, reason="stop"):
        return verdict.judge(text, MUST, finish_reason=reason, compiler="builtin")

    longer = GOOD.replace("end\n```", "rem done\nend\n```")
    rows = [
        row("a", 0, longer, judge(longer)),
        row("a", 1, GOOD, judge(GOOD)),
        row("a", 2, "oops", judge("oops")),
        row("b", 0, "nope", judge("nope")),
        row("b", 1, GOOD, judge(GOOD, "length")),
    ]
    rjob = StageJob(cfg=cfg, stage="rft", base_source="x", backend="hf", console=QUIET)
    built = selftrain.build_data(rjob, prompts, rows)
    answers = [c[-1]["content"] for c in built.rft]
    # the shorter of two equal passes; b has none; only the fresh prompt's reference (a's is stage 2's data)
    assert answers == [GOOD, "REF-B"]
    cfg.train.rft.include_references = True
    assert [c[-1]["content"] for c in selftrain.build_data(rjob, prompts, rows).rft] == [
        GOOD,
        "REF-A",
        "REF-B",
    ]
    cfg.train.rft.include_references = False
    assert [c[-1]["content"] for c in selftrain.build_data(rjob, prompts, rows).rft] == [GOOD]
    djob = StageJob(cfg=cfg, stage="dpo", base_source="x", backend="hf", console=QUIET)
    pairs = selftrain.build_data(djob, prompts, rows).pairs
    # b: no passing answer, so its reference stands in against both failing ones
    assert [(p["chosen"][0]["content"], p["rejected"][0]["content"]) for p in pairs] == [
        (GOOD, "oops"),
        ("REF-B", "nope"),
        ("REF-B", GOOD),
    ]
    # with sampling.greedy the greedy answer (sample k) is rejected first when it fails, worse ones or not
    k = cfg.train.dpo.sampling.samples_per_prompt
    greedy_rows = [*rows, row("b", k, "greedy-loop", judge(GOOD, "length"))]
    worst_first = [
        p["rejected"][0]["content"] for p in selftrain.build_data(djob, prompts, greedy_rows).pairs
    ]
    assert worst_first == ["oops", "nope", GOOD]  # two pairs a prompt: the greedy answer is left out
    cfg.train.dpo.sampling.greedy = True
    greedy_first = [
        p["rejected"][0]["content"] for p in selftrain.build_data(djob, prompts, greedy_rows).pairs
    ]
    assert greedy_first == ["oops", "greedy-loop", "nope"]
    cfg.train.dpo.sampling.greedy = False
    stats = selftrain.sample_stats(rows)
    assert stats["compile_rate"] == 0.6 and stats["pass_rate"] == 0.4 and stats["ran_on_rate"] == 0.2
    assert preference.choose_loss("auto", 3, 64) == "kto" and preference.choose_loss("auto", 64, 64) == "dpo"


# ----------------------------------------------------------------------------- training


def dpo_config(tmp_path, model, **kw):
    return make_config(
        tmp_path,
        model,
        train__stages=["sft", "dpo"],
        train__logging_steps=1,
        train__dpo={
            "learning_rate": 5e-3,
            "max_steps": 8,
            "per_device_batch_size": 4,
            "gradient_accumulation_steps": 1,
            "warmup_ratio": 0.0,
            "max_length": 128,
            "beta": 0.1,
            "loss": "dpo",
            **kw,
        },
    )


def test_dpo_raises_the_margin_of_chosen_over_rejected(tmp_path, tiny_model_dir):
    cfg = dpo_config(tmp_path, tiny_model_dir)
    pairs = [
        {
            "prompt": conversation(i)[:2],
            "chosen": [{"role": "assistant", "content": conversation(i)[2]["content"]}],
            "rejected": [{"role": "assistant", "content": "def main():\n    return None"}],
        }
        for i in range(4)
    ]
    job = selftrain.RoundJob(
        cfg=cfg, stage="dpo", base_source=str(tiny_model_dir), backend="hf", console=QUIET
    )
    result = preference.run_preference(job, pairs, [])
    m = result["metrics"]
    assert m["loss_type"] == "dpo" and m["steps"] == 8
    assert m["rewards_margins_last"] > m["rewards_margins_first"] and m["rewards_margins_last"] > 0
    assert (job.adapter_dir / "adapter_config.json").exists()


def test_an_sft_term_keeps_the_chosen_answers_likely_under_dpo(tmp_path, tiny_model_dir):
    # train.dpo.sft_weight adds trl's "sft" loss on the chosen answers: after the same steps on the same
    # pairs, the chosen answers are more likely than after plain DPO (which may lower both answers).
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from bbjtune.models import load_tokenizer

    pairs = [
        {
            "prompt": conversation(i)[:2],
            "chosen": [{"role": "assistant", "content": conversation(i)[2]["content"]}],
            "rejected": [{"role": "assistant", "content": "def main():\n    return None"}],
        }
        for i in range(4)
    ]
    tok = load_tokenizer(str(tiny_model_dir))

    def chosen_nll(adapter):
        model = PeftModel.from_pretrained(
            AutoModelForCausalLM.from_pretrained(str(tiny_model_dir)), str(adapter)
        )
        total = 0.0
        for p in pairs:
            prompt = tok.apply_chat_template(p["prompt"], tokenize=False, add_generation_prompt=True)
            ids = tok(prompt + p["chosen"][0]["content"], return_tensors="pt")["input_ids"]
            labels = ids.clone()
            labels[:, : len(tok(prompt)["input_ids"])] = -100
            with torch.no_grad():
                total += model(input_ids=ids, labels=labels).loss.item()
        return total / len(pairs)

    nll = {}
    for weight in (0.0, 10.0):
        cfg = dpo_config(tmp_path / f"w{weight}", tiny_model_dir, sft_weight=weight)
        job = selftrain.RoundJob(
            cfg=cfg, stage="dpo", base_source=str(tiny_model_dir), backend="hf", console=QUIET
        )
        result = preference.run_preference(job, pairs, [])
        assert result["metrics"]["loss_type"] == ("dpo+sft" if weight else "dpo")
        nll[weight] = chosen_nll(job.adapter_dir)
    assert nll[10.0] < nll[0.0] - 0.05  # measured: 8.08 against 8.19


def test_kto_trains_on_unpaired_answers(tmp_path, tiny_model_dir):
    cfg = dpo_config(tmp_path, tiny_model_dir, loss="auto", max_steps=3)
    unpaired = [
        {"prompt": conversation(i)[:2], "completion": [{"role": "assistant", "content": text}], "label": good}
        for i in range(4)
        for text, good in ((conversation(i)[2]["content"], True), ("def f(): pass", False))
    ]
    job = selftrain.RoundJob(
        cfg=cfg, stage="dpo", base_source=str(tiny_model_dir), backend="hf", console=QUIET
    )
    result = preference.run_preference(job, pairs=[], unpaired=unpaired)
    assert result["metrics"]["loss_type"] == "kto" and result["metrics"]["steps"] == 3
    assert (job.adapter_dir / "adapter_config.json").exists()


def test_a_resumed_preference_round_keeps_its_logged_steps(tmp_path, tiny_model_dir):
    # the trainer's log callback learns the checkpoint it resumes from: lines up to it stay in metrics.jsonl
    cfg = dpo_config(tmp_path, tiny_model_dir, loss="kto", max_steps=2)
    cfg.train.save_steps = 1
    unpaired = [
        {"prompt": conversation(i)[:2], "completion": [{"role": "assistant", "content": text}], "label": good}
        for i in range(2)
        for text, good in ((conversation(i)[2]["content"], True), ("def f(): pass", False))
    ]
    job = selftrain.RoundJob(
        cfg=cfg, stage="dpo", base_source=str(tiny_model_dir), backend="hf", console=QUIET
    )

    def logged_losses():
        rows = [json.loads(line) for line in job.metrics_path.read_text().splitlines()]
        return [(r["step"], r["loss"]) for r in rows if r["stage"] == "dpo" and "loss" in r]

    preference.run_preference(job, pairs=[], unpaired=unpaired)
    first = logged_losses()
    assert [step for step, _ in first] == [1, 2]
    preference.run_preference(job, pairs=[], unpaired=unpaired)  # resumes from checkpoint-2: nothing to train
    assert logged_losses() == first


def test_grpo_trains_with_the_checker_reward(tmp_path, tiny_model_dir):
    data_dir = write_data(tmp_path / "data", n_train=8, n_heldout=0)
    cfg = make_config(
        tmp_path,
        tiny_model_dir,
        data_dir,
        train__stages=["sft", "grpo"],
        train__logging_steps=1,
        train__grpo={
            "max_steps": 2,
            "per_device_batch_size": 2,
            "learning_rate": 1e-3,
            "max_length": 128,
            "sampling": {"samples_per_prompt": 2, "max_new_tokens": 8},
        },
    )
    from bbjtune.train.inputs import load_training_data

    job = selftrain.RoundJob(
        cfg=cfg, stage="grpo", base_source=str(tiny_model_dir), backend="hf", console=QUIET
    )
    result = preference.run_grpo(job, load_training_data(data_dir, ["grpo"]))
    assert result["metrics"]["steps"] == 2 and "reward_last" in result["metrics"]
    assert 0.0 <= result["metrics"]["reward_last"] <= 3.0


@pytest.mark.slow
def test_sft_rft_dpo_in_one_run_then_nothing_to_redo(tmp_path, tiny_model_dir):
    from bbjtune.train.stage import run_stage
    from bbjtune.models.trained import read_trained

    write_data(tmp_path / "data", n_train=12, n_heldout=1)
    samp = {"samples_per_prompt": 2, "max_new_tokens": 8, "batch_tokens": 2048}
    stage = {
        "max_steps": 2,
        "learning_rate": 1e-3,
        "max_length": 256,
        "per_device_batch_size": 4,
        "gradient_accumulation_steps": 1,
        "sampling": samp,
    }
    cfg = make_config(
        tmp_path,
        tiny_model_dir,
        train__stages=["sft", "rft", "dpo"],
        train__sft__max_steps=2,
        train__rft={**stage, "include_references": True},  # the tiny model passes nothing
        train__dpo={**stage, "min_pairs": 1},
        data__decontaminate_against=[],
    )
    run_stage(cfg, console=QUIET)
    handle = read_trained(cfg.train_dir)
    assert handle.stages == ["sft", "rft", "dpo"]
    assert handle.adapter == (cfg.train_dir / "dpo" / "round-1" / "adapter").resolve()
    assert handle.base_model == str((cfg.train_dir / "dpo" / "round-1" / "start").resolve())
    for name in ("rft", "dpo"):
        summary = json.loads((cfg.train_dir / name / "selftrain.json").read_text())
        stats = summary["rounds"][0]
        assert (
            stats["samples"] == 2 * stats["prompts"] and stats["prompts"] == 5
        )  # 6 distinct prompts, 1 held out
        assert len(read_samples(cfg.train_dir / name / "round-1" / SAMPLES_FILE)) == stats["samples"]
        speed = stats["sampling_speed"]
        assert (
            speed["engine"] == "refill" and speed["generated_tokens"] > 0 and speed["tokens_per_s"] > 0
        )  # the default engine
    pairs = json.loads((cfg.train_dir / "dpo" / "round-1" / "round.json").read_text())["stats"]["pairs"]
    assert pairs > 0
    section = (cfg.train_dir / "dpo" / "selftrain.md").read_text()
    assert (
        section.startswith("## Self-training: dpo")
        and "| 1 | 5 | 10 |" in section
        and f"| {pairs} |" in section
    )
    before = (cfg.train_dir / "dpo" / "round-1" / "adapter" / "adapter_model.safetensors").stat().st_mtime_ns
    log = Console(stderr=True, record=True, width=200)
    run_stage(cfg, console=log)
    text = log.export_text()
    assert "rft round 1: already trained" in text and "dpo round 1: already trained" in text
    assert (
        cfg.train_dir / "dpo" / "round-1" / "adapter" / "adapter_model.safetensors"
    ).stat().st_mtime_ns == before
    # stage 2 trained again (other settings): everything built on it is stale and is redone
    retrained = cfg.model_copy(deep=True)
    retrained.train.sft.max_steps = 3
    run_stage(retrained, console=log)
    text = log.export_text()
    assert "already trained" not in text and "rft round 1: merging" in text and "dpo round 1: merging" in text
    assert (
        cfg.train_dir / "dpo" / "round-1" / "adapter" / "adapter_model.safetensors"
    ).stat().st_mtime_ns != before


@pytest.mark.slow
def test_a_self_training_stage_on_its_own_after_a_plain_sft_run(tmp_path, tiny_model_dir):
    # train.stages: sft (the usual config), then `bbjtune train CONFIG --stage rft` on its result
    from bbjtune.train.stage import run_stage
    from bbjtune.models.trained import read_trained

    write_data(tmp_path / "data", n_train=8, n_heldout=1)
    cfg = make_config(
        tmp_path,
        tiny_model_dir,
        train__sft__max_steps=1,
        data__decontaminate_against=[],
        train__rft={
            "max_steps": 1,
            "max_length": 256,
            "gradient_accumulation_steps": 1,
            "include_references": True,  # the tiny model passes nothing
            "sampling": {"samples_per_prompt": 2, "max_new_tokens": 4},
        },
    )
    run_stage(cfg, console=QUIET)
    assert read_trained(cfg.train_dir).stages == ["sft"]
    run_stage(cfg, stages=["rft"], console=QUIET)
    handle = read_trained(cfg.train_dir)
    assert (
        handle.stages == ["sft", "rft"]
        and handle.adapter == (cfg.train_dir / "rft" / "round-1" / "adapter").resolve()
    )
    start = json.loads((cfg.train_dir / "rft" / "round-1" / "start.json").read_text())
    assert start["adapter"] == str(cfg.train_dir / "sft" / "adapter")


def test_a_new_round_keeps_the_metrics_of_the_rounds_before_it(tmp_path):
    """Every round of a stage logs under the stage's name; starting round 2 (or resuming it) must drop
    only round 2's own lines, never round 1's or another stage's."""
    path = tmp_path / "metrics.jsonl"
    rows = [
        {"stage": "sft", "step": 5, "loss": 1.0},
        {"stage": "rft", "round": 1, "step": 5, "loss": 0.9},
        {"stage": "rft", "round": 2, "step": 5, "loss": 0.8},
        {"stage": "rft", "round": 2, "step": 10, "loss": 0.7},
    ]
    write_jsonl(path, rows)
    MetricsLog(path, "rft", resume_step=5, round=2)  # round 2 resumes from its step 5
    assert read_complete_jsonl(path) == rows[:3]
    MetricsLog(path, "rft", resume_step=None, round=2)  # round 2 starts over
    assert read_complete_jsonl(path) == rows[:2]
    MetricsLog(path, "rft", resume_step=None, round=1)
    assert read_complete_jsonl(path) == rows[:1]


@pytest.mark.slow
def test_released_start_models_leave_one_at_a_time_and_the_same_weights(
    tmp_path, tiny_model_dir, monkeypatch
):
    """train.cpt.keep_merged and train.keep_round_models false: each 16-bit model goes once the next is
    merged (from the original model and the chain of adapters), the weights equal merging one after
    another, a rerun rebuilds nothing, and a shorter plan rebuilds the start its trained.json names.
    The run directory is relative, as `output_dir: runs/{name}` gives: a released model's path must
    name the same model as before it was released."""
    import torch
    from safetensors.torch import load_file

    from bbjtune.models.merge import merge_adapters
    from bbjtune.models.trained import read_trained
    from bbjtune.train.stage import run_stage

    write_data(tmp_path / "data", n_train=12, n_heldout=1)
    samp = {"samples_per_prompt": 2, "max_new_tokens": 8, "batch_tokens": 2048}
    stage = {
        "max_steps": 1,
        "learning_rate": 5e-3,
        "warmup_ratio": 0.0,  # one step: a warmup would make it a step of learning rate 0
        "max_length": 256,
        "gradient_accumulation_steps": 1,
        "sampling": samp,
    }
    cfg = make_config(
        tmp_path,
        tiny_model_dir,
        train__stages=["cpt", "sft", "rft", "dpo"],
        train__cpt__max_steps=1,
        train__cpt__keep_merged=False,
        train__sft__max_steps=1,
        train__keep_round_models=False,
        train__rft={**stage, "include_references": True, "sampling": {**samp, "rounds": 2}},
        train__dpo={**stage, "min_pairs": 1},
        data__decontaminate_against=[],
        output_dir="run",
    )
    monkeypatch.chdir(tmp_path)
    log = Console(stderr=True, record=True, width=300)
    run_stage(cfg, console=log)
    t = cfg.train_dir
    assert not t.is_absolute()
    text = log.export_text()
    assert not (t / "cpt" / "merged").exists() and (t / "cpt" / "merged.released.json").exists()
    for released in (t / "rft" / "round-1", t / "rft" / "round-2"):
        assert not (released / "start").exists()
        assert json.loads((released / "start.json").read_text())["released"] is True
    final = t / "dpo" / "round-1" / "start"
    assert (final / "config.json").exists() and read_trained(t).base_model == str(final.resolve())
    assert text.count("released ") == 3 and not list(t.rglob(".start.gone.*"))

    # the same weights as merging each adapter into the saved model before it, one after another
    adapters = [
        t / "cpt" / "adapter",
        t / "sft" / "adapter",
        *(t / "rft" / f"round-{n}" / "adapter" for n in (1, 2)),
    ]
    model = str(tiny_model_dir)
    for n, adapter in enumerate(adapters):
        model = str(
            merge_adapters(
                model,
                [adapter],
                tmp_path / f"step{n}",
                tokenizer_source=str(adapter),
                chat=True,
                dtype="float32",
            )
        )
    want, got = load_file(f"{model}/model.safetensors"), load_file(f"{final}/model.safetensors")
    assert want.keys() == got.keys()
    assert all(torch.allclose(want[k], got[k], atol=1e-6) for k in want)

    log = Console(stderr=True, record=True, width=300)
    run_stage(cfg, console=log)  # nothing to redo, nothing rebuilt
    text = log.export_text()
    assert "rft round 2: already trained" in text and "dpo round 1: already trained" in text
    assert (
        "merging" not in text and "rebuilding" not in text and not (t / "rft" / "round-2" / "start").exists()
    )

    shorter = cfg.model_copy(deep=True)
    shorter.train.stages = ["cpt", "sft", "rft"]
    run_stage(shorter, console=QUIET)  # trained.json now names rft's last start: it is merged again
    start = t / "rft" / "round-2" / "start"
    assert (start / "config.json").exists() and read_trained(t).base_model == str(start.resolve())
    assert "released" not in json.loads((t / "rft" / "round-2" / "start.json").read_text())
    rebuilt = load_file(f"{start}/model.safetensors")
    after_rft1 = load_file(f"{tmp_path / 'step2'}/model.safetensors")  # merged up to rft round 1's adapter
    assert all(torch.allclose(rebuilt[k], after_rft1[k], atol=1e-6) for k in after_rft1)
    assert not all(torch.allclose(rebuilt[k], want[k], atol=1e-6) for k in want)  # not the final model


def test_a_round_is_kept_when_only_rounds_or_how_samples_are_computed_change(tmp_path, tiny_model_dir):
    # Asking for a second round (or another sampling engine) must not retrain round 1; another
    # temperature draws other samples and must.
    cfg = make_config(tmp_path, tiny_model_dir, train__stages=["sft", "dpo"])

    def fingerprint():
        return StageJob(cfg=cfg, stage="dpo", base_source="x", backend="hf", console=QUIET).fingerprint()

    before = fingerprint()
    sampling = cfg.train.dpo.sampling
    sampling.rounds, sampling.engine, sampling.batch_tokens, sampling.segment_tokens = 2, "refill", 4096, 32
    assert fingerprint() == before
    sampling.temperature = 0.5
    assert fingerprint() != before


def test_loop_pairs_cut_a_runaway_answer_where_it_starts_to_repeat(tmp_path, tiny_model_dir):
    cfg = make_config(tmp_path, tiny_model_dir, train__stages=["sft", "dpo"])
    prompts = [
        SelfPrompt("a", conversation(0)[:2], "REF-A", MUST),
        SelfPrompt("b", conversation(1)[:2], "REF-B", MUST),
    ]
    head = '```bbj\nch = unt\nopen (ch)"notes.txt"\n'
    runaway = head + "read (ch,end=done)x$\n" * 40 + "read (ch,e"
    broken = "```bbj\nx = = 1\n" + "print x\n" * 40 + "pri"  # its cut does not compile: no loop pair

    def judge(text, reason="stop"):
        return verdict.judge(text, MUST, finish_reason=reason, compiler="builtin")

    rows = [
        row("a", 0, GOOD, judge(GOOD)),
        row("a", 1, runaway, judge(runaway, "length")),
        row("b", 0, broken, judge(broken, "length")),
    ]
    djob = StageJob(cfg=cfg, stage="dpo", base_source="x", backend="hf", console=QUIET)
    plain = selftrain.build_data(djob, prompts, rows)
    assert "loop_pairs" not in plain.stats
    cfg.train.dpo.loop_pairs = True
    built = selftrain.build_data(djob, prompts, rows)
    loops = [p for p in built.pairs if p not in plain.pairs]
    assert built.stats["loop_pairs"] == 1 and len(loops) == 1
    (loop,) = loops
    assert loop["chosen"][0]["content"] == head + "read (ch,end=done)x$\n```"
    assert loop["rejected"][0]["content"] == runaway and loop["prompt"] == prompts[0].context
