"""bnexp's BatchNorm layers, the networks, and `convert_norm` for any nn.Module (public API)."""

from bnexp.nn.convert import convert_norm

__all__ = ["convert_norm"]
