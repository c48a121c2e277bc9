"""The ``diffcut-gpu`` command line: ``segment`` (images to labels), ``bench`` (timing scripts), ``eval``.

Python callers use `main`: ``main(["segment", "photos/", "--out", "out"])`` returns the exit code.
"""

from .main import build_parser, main

__all__ = ["build_parser", "main"]
