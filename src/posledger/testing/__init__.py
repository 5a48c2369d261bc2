"""Test helpers for users of posledger: hypothesis strategies (``posledger.testing.strategies``)
and fakes of the exchanges it talks to."""
