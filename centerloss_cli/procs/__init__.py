"""Processes and signals: the stop signals and what they ask for (stop.py), and child processes that start
through their own entry point and talk over pipes (processes.py)."""
