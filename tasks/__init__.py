"""The task service: start, cancel, approve and read tasks over the Temporal client
(`tasks/service.py`, errors in `tasks/errors.py`), and the Temporal connection helpers
(`tasks/temporal_connection.py`) the worker shares."""
