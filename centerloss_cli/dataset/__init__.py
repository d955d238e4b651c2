"""The data: fetching and verifying MNIST and Fashion-MNIST (fetch.py), and reading their IDX files into device-
resident splits and batches (loading.py)."""
