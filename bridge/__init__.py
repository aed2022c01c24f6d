"""The bridge: consumes request and approval-reply CloudEvents and hands them to the task
service (`tasks/`), which drives the Temporal workflows.

It never imports `worker` or `gateway`; it starts workflows by name with inputs from `schemas`.
"""
