"""What agent and collector share: the wire schema (proto/v1) and the rules both sides apply.

Imports nothing from `agent` or `collector`.
"""
