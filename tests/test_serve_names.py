"""The name `bbjtune serve gguf FILE.gguf` serves a bare GGUF file under."""

from bbjtune.serve.cli import gguf_alias


def test_a_gguf_is_served_under_its_name_without_the_quantization():
    assert gguf_alias("real-0.5b.q8_0.gguf") == "real-0.5b"  # not "real-0" (cut at the first dot)
    assert gguf_alias("bbj-tiny.f16.gguf") == "bbj-tiny"
    assert gguf_alias("qwen2.5-coder-7b-base.Q4_K_M.gguf") == "qwen2.5-coder-7b-base"
    assert gguf_alias("bbj-7b-q4_k_m.gguf") == "bbj-7b"
    assert gguf_alias("model.gguf") == "model" and gguf_alias("q8_0.gguf") == "q8_0"
