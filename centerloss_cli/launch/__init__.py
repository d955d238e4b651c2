"""Sweeps: λ × α × seed, their names, records, grids and tables (sweep.py), trained here in turn or in worker
processes (local.py), or as Slurm job arrays (slurm.py)."""
