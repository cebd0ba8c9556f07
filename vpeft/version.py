"""The package version, a leaf: read by the package face, the CLI and the trainer (for provenance)."""

__version__ = "0.1.0"
