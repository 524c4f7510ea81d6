"""Conversations: the stored records a principal owns and changes directly, outside any turn:
the conversations themselves and the feedback given on them or on their messages.
"""
