"""Untrusted text made safe to print: one printable line, bounded.

Evidence, request files and database rows are written by whoever could write them; printed
raw, an escape sequence in a principal or a target (``\\x1b[1A\\x1b[2K``) could move the
cursor and overwrite what an operator reads on the line above, and a newline could forge a
line of its own. Rich strips a few control codes but not ``ESC``.
"""

from __future__ import annotations

from typing import Final

__all__ = ["MAX_LINE", "one_line"]

#: The longest text kept (longer text is cut, ending in ``…``).
MAX_LINE: Final = 300


def one_line(value: object, limit: int = MAX_LINE) -> str:
    """``value`` as text with every non-printable character (control codes, newlines,
    ``ESC``) written as ``\\xNN``, cut to ``limit`` characters."""
    text = value if isinstance(value, str) else str(value)
    if not text.isprintable():
        text = "".join(c if c.isprintable() else f"\\x{ord(c):02x}" for c in text)
    return text if len(text) <= limit else text[: limit - 1] + "…"
