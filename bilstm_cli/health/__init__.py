"""The health checks behind ``bilstm check``: spectral estimates (``linalg``) and the rules
that turn a direction's weights into findings (``rules``)."""
