"""Keras glue of pattern pruning: wrapper, entry points, schedules, callbacks."""
