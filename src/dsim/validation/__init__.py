"""Validation: checking a ranking with real fine-tuning runs, their store and report."""
