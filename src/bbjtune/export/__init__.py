"""Export: merged weights, verified GGUF files, an Ollama Modelfile and a vLLM LoRA config."""
