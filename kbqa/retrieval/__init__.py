"""kbqa.retrieval.search."""
