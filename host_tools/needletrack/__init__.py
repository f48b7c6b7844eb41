"""NeedleTrack host tools."""

__version__ = "0.1.0"
