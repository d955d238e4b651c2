"""centerloss: reproduce the MNIST center-loss experiment of Wen et al. (ECCV 2016)."""

__version__ = "0.1.0"
