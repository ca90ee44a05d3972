"""The LLM stage: local and remote LangChain LLMs (generation only), model loading, CPU speed-ups, prefix cache, quantization."""
