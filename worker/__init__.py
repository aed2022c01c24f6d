"""The worker: the agent workflow and the activities that do its I/O."""
