"""Model files: the only part of the tool that knows how Keras lays weights out."""

from bilstm_cli.formats.reader import open_weights, read_model, sniff

__all__ = ["open_weights", "read_model", "sniff"]
