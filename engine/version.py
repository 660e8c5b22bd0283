"""The engine's version, recorded in every result.json (a module of its own: engine/__init__.py
imports the trainer lazily, and the trainer needs the version)."""
__version__ = "0.1.0"
