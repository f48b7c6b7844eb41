"""The virtual probe, CPython side: scenario truth, physics and sensor models."""
