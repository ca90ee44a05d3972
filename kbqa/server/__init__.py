"""`kbqa serve`: an OpenAI-compatible HTTP API over the knowledge bases, with per-key access.

app.py builds the FastAPI app; chat.py is the OpenAI part; kbs.py the knowledge-base endpoints;
auth.py the hashed API keys; queue.py the bounded generation queue; jobs.py background ingestion,
whose status jobstore.py keeps on disk; backends.py maps API model names to variants of the one
shared (local or remote) model; usage.py measures each answer's token usage and finish reason.
"""
