"""The paper's numerics, and nothing else: LeNet++ (model), the center loss and its three update rules
(center_loss), the solver (solver), the schedule (schedule), compactness (metrics), bf16 and TF32 (precision),
one training step (step), K runs stacked into one model (stacked) and a step as one CUDA graph (capture).
What they read of the settings is settings.Settings.

Nothing here imports from the rest of centerloss_cli (tests/test_architecture.py checks it): no files,
processes, signals or printing. The machinery around it (loop.py, training.py, ...) drives it.
"""
