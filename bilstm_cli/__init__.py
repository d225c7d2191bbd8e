"""bilstm-cli: the weights of Keras Bidirectional RNN layers, read and written in the model file."""

__version__ = "0.1.0"
