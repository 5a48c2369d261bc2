"""Exchange adapters: each turns one API into complete Snapshots and Fills, or raises."""
