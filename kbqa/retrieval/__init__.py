"""Finding the passages for a question: BM25, dense and hybrid search, ranking, reranking, the LangChain retriever."""
