"""The domain: value types, events, the fold of a position and the pure decisions over it.

Nothing here reads a clock, a store or an exchange, and nothing here imports from outside
``posledger.core``.
"""
