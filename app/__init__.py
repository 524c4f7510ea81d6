"""chat-api: an async REST backend for LLM chat products."""

__version__ = "0.1.0"
