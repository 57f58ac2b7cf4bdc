"""Serving an exported model: Ollama, vLLM, or a local OpenAI-compatible llama.cpp server.

`bbjtune serve` reads only what `bbjtune export` wrote and INTERFACES.md documents: the export
manifest's `ollama` block, the Modelfile, the GGUF files and `vllm-lora.json`.
"""
