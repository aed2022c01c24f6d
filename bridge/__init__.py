"""The bridge: consumes request and approval-reply CloudEvents and drives Temporal workflows.

It never imports `worker`; it starts workflows by name with inputs from `schemas`.
"""
