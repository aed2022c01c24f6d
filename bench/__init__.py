"""The benchmark of issue #7: bridge and worker overhead against baselines taken in the same run.

Run it with ``python -m bench`` (see ``docs/performance.md`` and ``python -m bench --help``).
"""
