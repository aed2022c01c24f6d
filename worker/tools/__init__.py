"""Tools the model may call: built-ins and configured Python callables, in one registry."""
