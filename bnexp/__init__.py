"""bnexp: measure what Batch Normalization does for a neural network."""

__version__ = "0.1.0"
