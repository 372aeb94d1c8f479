"""The core of the build farm, shared by the web front end and the build workers."""

__version__ = "0.1.0"
