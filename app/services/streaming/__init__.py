"""Streaming: how a running reply reaches its listeners, and how they are let in.

A generation appends its events to a per-reply event log (in-process, or Redis Streams fanned
out by one reader per process); an SSE listener reads that log, or the stored reply once the
log is gone, and a browser's `EventSource` authenticates with a single-use stream ticket.
"""
