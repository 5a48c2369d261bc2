"""What keeps a ledger in step with an exchange: the Synchronizer loops and the Bybit stream."""
