"""Recorded workflow histories, replayed by tests/test_replay.py (see README.md)."""
