"""The paper's numerics, and nothing else: LeNet++ (model), the center loss and its three update rules
(center_loss), the solver (solver), the schedule (schedule), compactness (metrics), bf16 and TF32 (precision),
a run's state (state), one training step for one run or K stacked runs (step) and a step as one CUDA graph
(capture). What they read of the settings they read by name, from a TrainConfig or any object that has
those fields; the choices they understand are in choices.

Nothing here imports from the rest of centerloss_cli (tests/test_architecture.py checks it): no files,
processes, signals or printing. The machinery around it (engine/loop.py, engine/training.py, ...) drives it.
"""
