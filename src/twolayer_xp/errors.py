"""How an error reads: one line, whatever the exception held. Below every layer; imports nothing."""

from __future__ import annotations


def one_line(what: BaseException | str, *, limit: int | None = None, named: bool = False) -> str:
    """``what``'s text on one line (whitespace collapsed), cut to ``limit`` characters.

    named: prefix an exception's type name ("ImportError: ..."), for a cause quoted inside
    another message; an exception with no text reads as its type name.
    """
    text = " ".join(str(what).split())
    if isinstance(what, BaseException) and (named or not text):
        text = f"{type(what).__name__}: {text}" if text else type(what).__name__
    return text if limit is None or len(text) <= limit else text[: limit - 3] + "..."


def shown(value, limit: int = 80) -> str:
    """``repr(value)`` cut to ``limit`` characters: a bad value quoted in an error message."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."
