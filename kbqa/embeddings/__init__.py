"""kbqa.embeddings.embedders."""
