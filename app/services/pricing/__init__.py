"""Pricing: what a model costs per token, what a reply costs (exact `Decimal` arithmetic), and
the usage reports and model catalog built on those prices. List prices come from the bundled
genai-prices snapshot; configured prices come first.
"""
