"""kbqa.llm.local."""
