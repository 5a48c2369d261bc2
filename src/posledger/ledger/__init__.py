"""The service layer: :class:`Ledger`, the shell that loads states, calls the pure core,
saves its events and retries by recomputing.

``ledger.py`` holds the public API; ``commit.py`` the one load-decide-save path (group commit,
retries, backfill chunks); ``states.py`` the state cache that follows the store's log;
``seen.py`` the cache of recorded exec_ids.
"""

from posledger.core.decide import FillBatchResult, FillResult
from posledger.ledger.ledger import Ledger

__all__ = ["FillBatchResult", "FillResult", "Ledger"]
