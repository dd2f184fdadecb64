"""The package version (one assignment). Must not import: anything but the standard library."""

__version__ = "0.1.0.dev0"
