"""Training: what an entry point owns (runtime.py), a run as the machinery drives it and its checkpoint (run.py),
an epoch's evaluation (evaluation.py), what an epoch commits (commit.py), the one epoch loop (loop.py) and
whole runs (training.py)."""
