"""GGUF writing: metadata llama.cpp needs, round trips through transformers and llama.cpp, quantization."""

from __future__ import annotations

import json

import pytest
import torch
from export_fixtures import make_padded_vocab_model, make_wide_model

from bbjtune.errors import BbjtuneError
from bbjtune.export.gguf import read_vocab, write_gguf
from bbjtune.models.architecture import read_gguf_metadata
from bbjtune.models import load_model, load_tokenizer
from bbjtune.models.chat_template import CHATML_TEMPLATE, IM_END, IM_START, render_chatml

llama_cpp = pytest.importorskip(
    "llama_cpp", reason="llama-cpp-python is not installed (pip install 'bbjtune[export]')"
)

BBJ_TEXT = '0010 REM Größe\r\nPRINT "x$=", x$, @(0,2)\nmethod public void run()\n  #n$ = "a"\nmethodend\n'


@pytest.fixture(scope="module")
def ggufs(tiny_model_dir, tmp_path_factory):
    from bbjtune.export.quantize import quantize

    out = tmp_path_factory.mktemp("gguf")
    paths = {q: write_gguf(tiny_model_dir, out / f"tiny.{q}.gguf", q) for q in ("f16", "q8_0", "bf16")}
    paths["q4_k_m"] = quantize(paths["f16"], out / "tiny.q4_k_m.gguf", "q4_k_m")
    return paths


def test_metadata_is_what_llama_cpp_expects_of_qwen2(ggufs, tiny_model_dir):
    md = read_gguf_metadata(ggufs["f16"])
    cfg = json.loads((tiny_model_dir / "config.json").read_text())
    tok = load_tokenizer(str(tiny_model_dir))
    assert md["general.architecture"] == "qwen2"
    assert md["qwen2.block_count"] == cfg["num_hidden_layers"]
    assert md["qwen2.embedding_length"] == cfg["hidden_size"]
    assert md["qwen2.attention.head_count_kv"] == cfg["num_key_value_heads"]
    assert md["qwen2.rope.freq_base"] == pytest.approx(cfg["rope_parameters"]["rope_theta"])
    assert md["tokenizer.ggml.model"] == "gpt2" and md["tokenizer.ggml.pre"] == "qwen2"
    assert md["tokenizer.ggml.tokens"] == cfg["vocab_size"]
    assert md["tokenizer.ggml.add_bos_token"] is False
    assert md["tokenizer.ggml.padding_token_id"] == tok.convert_tokens_to_ids("<|endoftext|>")
    assert md["tokenizer.ggml.fim_pre_token_id"] == tok.convert_tokens_to_ids("<|fim_prefix|>")
    assert (
        md["tokenizer.chat_template"] == CHATML_TEMPLATE
        and "{% generation" not in md["tokenizer.chat_template"]
    )
    assert md["tensor_types"] == ["F16", "F32"]
    assert read_gguf_metadata(ggufs["q8_0"])["tensor_types"] == ["F32", "Q8_0"]


def test_vocab_types(tiny_model_dir):
    import gguf

    cfg = json.loads((tiny_model_dir / "config.json").read_text())
    vocab = read_vocab(tiny_model_dir, cfg["vocab_size"])
    ids = load_tokenizer(str(tiny_model_dir)).get_vocab()
    assert vocab.types[ids[IM_START]] == gguf.TokenType.CONTROL
    assert vocab.types[ids["<tool_call>"]] == gguf.TokenType.USER_DEFINED  # added but not special, as Qwen
    assert vocab.types[ids["Ġ"]] == gguf.TokenType.NORMAL
    assert all(" " in m for m in vocab.merges)
    # the tiny base model stops on <|endoftext|> only: eos stays there, no eot
    assert vocab.special_ids["eos"] == ids["<|endoftext|>"] and "eot" not in vocab.special_ids


def test_embedding_rows_beyond_the_tokenizer_become_pad_tokens(tiny_model_dir, tmp_path):
    """Like Qwen2.5 (151,936 rows, 151,665 tokens): ids and rows stay aligned, llama.cpp loads it."""
    import gguf

    from bbjtune.export.verify import verify_all

    padded = make_padded_vocab_model(tiny_model_dir, tmp_path / "padded", extra_rows=64)
    rows = json.loads((padded / "config.json").read_text())["vocab_size"]
    n_tokens = len(load_tokenizer(str(padded)))
    assert rows == n_tokens + 64
    vocab = read_vocab(padded, rows)
    assert len(vocab.tokens) == rows
    assert vocab.tokens[n_tokens:] == [f"[PAD{i}]" for i in range(n_tokens, rows)]
    assert set(vocab.types[n_tokens:]) == {gguf.TokenType.UNUSED}
    path = write_gguf(padded, tmp_path / "padded.f16.gguf", "f16")
    report = verify_all(padded, {"f16": path})
    assert report["ok"], report["results"]["f16"]["failures"]


def test_chat_models_get_im_end_as_eos_and_eot(tiny_model_dir, tmp_path):
    import shutil

    chat_dir = tmp_path / "chat"
    shutil.copytree(tiny_model_dir, chat_dir)
    ids = load_tokenizer(str(tiny_model_dir)).get_vocab()
    gen = json.loads((chat_dir / "generation_config.json").read_text())
    gen["eos_token_id"] = [ids[IM_END], ids["<|endoftext|>"]]
    (chat_dir / "generation_config.json").write_text(json.dumps(gen))
    md = read_gguf_metadata(write_gguf(chat_dir, tmp_path / "chat.f16.gguf", "f16"))
    assert md["tokenizer.ggml.eos_token_id"] == ids[IM_END]
    assert md["tokenizer.ggml.eot_token_id"] == ids[IM_END]


def test_transformers_reads_our_gguf_back(ggufs, tiny_model_dir):
    """load_model(path.gguf) is the foundation's GGUF source path: it must read what export writes."""
    ids = torch.tensor([load_tokenizer(str(tiny_model_dir))(BBJ_TEXT).input_ids])
    reference = load_model(str(tiny_model_dir), dtype="float32")
    with torch.no_grad():
        want = reference(ids).logits
        for quant, tol in (("f16", 2e-3), ("q8_0", 3e-2)):
            got = load_model(str(ggufs[quant]), dtype="float32")(ids).logits
            assert (got - want).abs().max().item() < tol * max(1.0, want.abs().max().item()), quant
    tok = load_tokenizer(str(ggufs["f16"]))
    assert tok(BBJ_TEXT, add_special_tokens=False).input_ids == ids[0].tolist()


def test_llama_cpp_agrees_with_hf(ggufs, tiny_model_dir):
    from bbjtune.export.verify import TOLERANCES, verify_all

    report = verify_all(tiny_model_dir, ggufs)
    assert report["ok"], {q: r["failures"] for q, r in report["results"].items()}
    f16 = report["results"]["f16"]
    assert f16["tokenization_identical"] and f16["greedy_identical"] == len(f16["greedy_common_prefix"])
    assert f16["max_rel_diff"] < TOLERANCES["f16"].max_rel
    # quantization error grows with fewer bits, and stays far below what a broken conversion gives
    assert (
        f16["max_abs_diff"]
        < report["results"]["q8_0"]["max_abs_diff"]
        < report["results"]["q4_k_m"]["max_abs_diff"]
    )


def test_greedy_divergence_fails_unless_the_reference_was_at_a_near_tie(ggufs, tiny_model_dir):
    """The greedy_near_ties rule: a divergence where the HF model's top two tokens were closer than
    twice the largest logit difference is rounding, not a wrong conversion; anywhere else it fails."""
    from bbjtune.export.verify import hf_reference, verify_gguf

    ref = hf_reference(tiny_model_dir)
    first = ref.greedy[0]
    ref.greedy[0] = [(first[0] + 1) % ref.logits[0].shape[-1], *first[1:]]  # llama.cpp keeps first[0]
    ref.greedy_margins[0][0] = 10.0  # a clear lead: the conversion must have changed the answer
    clear = verify_gguf(ggufs["f16"], "f16", ref)
    assert clear["greedy_common_prefix"][0] == 0 and clear["greedy_near_ties"] == []
    assert any("greedy text diverges" in f for f in clear["failures"]) and not clear["ok"]
    ref.greedy_margins[0][0] = 0.0  # a tie: either token is the greedy choice
    tie = verify_gguf(ggufs["f16"], "f16", ref)
    assert tie["greedy_near_ties"] == [0] and tie["ok"], tie["failures"]


def test_real_q4_k_blocks_on_a_256_wide_model(tiny_model_dir, tmp_path):
    """Tiny models fall back to q5_0/q8_0 rows; a 256-wide model gets real Q4_K/Q6_K blocks."""
    from bbjtune.export.quantize import quantize
    from bbjtune.export.verify import verify_all

    wide = make_wide_model(tiny_model_dir, tmp_path / "wide")
    f16 = write_gguf(wide, tmp_path / "wide.f16.gguf", "f16")
    q4 = quantize(f16, tmp_path / "wide.q4_k_m.gguf", "q4_k_m")
    types = read_gguf_metadata(q4)["tensor_types"]
    assert "Q4_K" in types and "Q6_K" in types
    assert read_gguf_metadata(q4)["general.file_type"] == 15  # LLAMA_FTYPE_MOSTLY_Q4_K_M
    report = verify_all(wide, {"f16": f16, "q4_k_m": q4})["results"]
    assert report["f16"]["ok"], report["f16"]["failures"]
    q = report["q4_k_m"]
    assert q["loads"] and q["tokenization_identical"]
    # random weights have no structure for 4-bit blocks to keep, and near-tied top tokens among
    # 4096: the error is the expected ~0.1 of the logit spread, and top-1 is far above chance (1/4096)
    assert report["f16"]["mean_rel_diff"] < q["mean_rel_diff"] < 0.25
    assert q["top1_agreement"] > 0.3


def test_a_broken_conversion_is_caught(tiny_model_dir, tmp_path):
    """Swapping two layers' attention weights must fail verification (the check has teeth)."""
    import shutil

    from safetensors.torch import load_file, save_file

    from bbjtune.export.verify import verify_all

    broken = tmp_path / "broken"
    shutil.copytree(tiny_model_dir, broken)
    weights = load_file(broken / "model.safetensors")
    a, b = "model.layers.0.self_attn.q_proj.weight", "model.layers.1.self_attn.q_proj.weight"
    weights[a], weights[b] = weights[b].clone(), weights[a].clone()
    save_file(weights, broken / "model.safetensors", metadata={"format": "pt"})
    gguf_path = write_gguf(broken, tmp_path / "broken.f16.gguf", "f16")
    report = verify_all(tiny_model_dir, {"f16": gguf_path})
    assert not report["ok"] and report["results"]["f16"]["failures"]


def test_unknown_type_and_wrong_model_fail_before_writing(tiny_model_dir, tmp_path):
    with pytest.raises(BbjtuneError, match="not written directly"):
        write_gguf(tiny_model_dir, tmp_path / "x.q4_k_m.gguf", "q4_k_m")
    other = tmp_path / "llama"
    other.mkdir()
    (other / "config.json").write_text(json.dumps({"model_type": "llama"}))
    with pytest.raises(BbjtuneError, match="Qwen2 architecture"):
        write_gguf(other, tmp_path / "x.f16.gguf", "f16")
    from bbjtune.export.quantize import quantize

    with pytest.raises(BbjtuneError, match="unknown llama.cpp quant type"):
        quantize(tmp_path / "x.f16.gguf", tmp_path / "x.iq1.gguf", "iq1_s")
    assert not list(tmp_path.glob("*.gguf"))


def test_interrupted_write_leaves_no_file(tiny_model_dir, tmp_path):
    def stop(i, n):
        if i == 5:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        write_gguf(tiny_model_dir, tmp_path / "t.f16.gguf", "f16", on_tensor=stop)
    assert list(tmp_path.iterdir()) == []


def test_chat_prompt_tokenizes_the_same_in_llama_cpp(ggufs, tiny_model_dir):
    text = render_chatml(
        [{"role": "system", "content": "S"}, {"role": "user", "content": BBJ_TEXT}],
        add_generation_prompt=True,
    )
    tok = load_tokenizer(str(tiny_model_dir))
    llm = llama_cpp.Llama(str(ggufs["q4_k_m"]), n_ctx=256, verbose=False)
    try:
        assert (
            llm.tokenize(text.encode(), add_bos=False, special=True)
            == tok(text, add_special_tokens=False).input_ids
        )
        assert llm.metadata["tokenizer.chat_template"] == CHATML_TEMPLATE
    finally:
        llm.close()


@pytest.mark.parametrize("out_type", ["f16", "q8_0"])
def test_tensors_prepared_in_threads_give_the_same_file(tiny_model_dir, tmp_path, out_type):
    """The writer prepares several tensors at once; the file must be byte for byte the one-at-a-time file."""
    one = write_gguf(tiny_model_dir, tmp_path / f"one.{out_type}.gguf", out_type, workers=1, name="m")
    seen = []
    many = write_gguf(
        tiny_model_dir,
        tmp_path / f"many.{out_type}.gguf",
        out_type,
        workers=3,
        name="m",
        on_tensor=lambda done, total: seen.append((done, total)),
    )
    assert one.read_bytes() == many.read_bytes()
    assert [d for d, _ in seen] == list(range(1, seen[-1][1] + 1))  # every tensor reported, in order
