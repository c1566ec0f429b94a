"""ftso, the Fault-Tolerant Service Operator."""

__version__ = "0.1.0"
