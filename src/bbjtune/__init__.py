"""bbjtune: fine-tune code LLMs on BBj, evaluate them, and ship them to Ollama and vLLM."""

__version__ = "0.1.0"
