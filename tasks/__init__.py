"""The task service: start, cancel, approve and read tasks over the Temporal client."""
