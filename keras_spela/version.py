"""The version of keras_spela (read by setup.py by path)."""

__version__ = "0.1.0"
