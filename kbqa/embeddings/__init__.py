"""Text to vectors: LangChain Embeddings, and the embedded default encoder (USE multilingual) run in torch."""
