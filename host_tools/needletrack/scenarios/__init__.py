"""The library of named virtual-probe scenarios (JSON, docs/scenarios.md)."""
