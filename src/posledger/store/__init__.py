"""Persistence: the eventsourcing application, recorders, codecs, bulk reads and the read model."""
