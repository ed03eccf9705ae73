"""The registry of file formats: each reader module registers itself here.

A format is recognised by its leading bytes (``matches(head, path)``), never by its
file extension, and opened by ``open(path) -> Opened``.  Readers register in
the order they are imported by ``fastlstm.checkpoint``; the first match wins.
"""

from dataclasses import dataclass
from typing import Callable


# enough leading bytes for every signature (the tar magic sits at offset 257)
HEAD_SIZE = 512


class Opened:
    """An open checkpoint file.

    tree: what the file holds, with ``TensorRecord`` leaves (a flat ``{name: record}`` dict
    for safetensors/npz, any pickled container for torch files).  ``flat`` is True when the
    format has no nesting (``key=`` is then meaningless).  ``close`` releases the file;
    records cannot be read after it.
    """

    def __init__(self, tree, flat, close=None):
        self.tree = tree
        self.flat = flat
        self._close = close

    def close(self):
        if self._close is not None:
            self._close()
            self._close = None

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.close()


@dataclass(frozen=True)
class Format:
    name: str
    description: str
    matches: Callable
    open: Callable


FORMATS = []


def register(name, description, matches):
    """Decorator registering ``open(path) -> Opened`` for files where ``matches(head, path)``."""
    def decorate(open_function):
        FORMATS.append(Format(name, description, matches, open_function))
        return open_function
    return decorate


def find_format(head, path):
    """The first registered ``Format`` matching ``head`` (the file's first bytes), or None."""
    for entry in FORMATS:
        if entry.matches(head, path):
            return entry
    return None
