"""The ``compressor`` command line (Typer). Commands are thin: parse, build configs, call the library, render."""

from compressor.cli.app import app, main

__all__ = ["app", "main"]
