"""Access: who is calling. API keys (stored as hashes and remembered per process for a short
while), JWT bearer tokens, and on stream routes a single-use ticket, all resolved to one
`Principal` that every other service acts as.
"""
