"""Fakes that are real servers: local HTTP servers speaking third-party wire formats."""
