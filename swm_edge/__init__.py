"""swm-edge: edge agent for smart water management."""

__version__ = "0.1.0"
