"""Dev tooling: the embedded stack of real servers and `temporal-executor dev`."""
