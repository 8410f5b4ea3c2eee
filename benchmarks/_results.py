"""Results files of the accuracy benchmarks: one JSON object per line."""

import json
import os


def finished_rows(path):
    """Every row already in `path` (none when it does not exist)."""
    if not os.path.exists(path):
        return []
    with open(path) as handle:
        return [json.loads(line) for line in handle if line.strip()]


def append_row(path, row):
    """Appends `row` and syncs it to disk, so an interrupted run keeps it."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "a") as handle:
        handle.write(json.dumps(row) + "\n")
        handle.flush()
        os.fsync(handle.fileno())
