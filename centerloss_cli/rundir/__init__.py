"""The run folder: atomic writes (storage.py), its files' names and the features and metrics in it (files.py),
what it records beyond its epochs (records.py: config.json, checkpoint.pt), its lock (lock.py), --overwrite's
deletion (overwrite.py), its life (folder.py: opened, checked, locked, resumed, created, repaired) and
`centerloss list` (listing.py)."""
