"""symgrad: symbolic backpropagation."""

__version__ = "0.1.0"
