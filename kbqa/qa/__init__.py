"""Question answering: the Chinese prompt template, the one LCEL chain (retriever | prompt | llm), stage timings."""
