"""Limits: what one caller may do, and how often. Requests and tokens per minute, open streams
and running generations at once, and `Idempotency-Key` replays, so a retried POST neither runs
twice nor counts twice.
"""
