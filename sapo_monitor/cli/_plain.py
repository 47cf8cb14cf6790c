"""Stored user data (run names, algorithms, tags, metric names...) shown as plain text in the terminal.

A field is someone's input: ``[/bold]`` must not reach Rich's markup parser (it raises), ``[link=...]``
must not become a hyperlink, and control characters (escape sequences) must not reach the terminal.
``plain`` returns a ``rich.text.Text``, which Rich prints verbatim; ``safe`` the escaped string, for
f-strings printed as markup.
"""

from __future__ import annotations

import re

from rich.markup import escape
from rich.text import Text

__all__ = ["plain", "safe"]

_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")  # C0 (tab and newline kept) and C1, DEL


def _clean(value: object) -> str:
    return _CONTROL.sub("\N{REPLACEMENT CHARACTER}", "" if value is None else str(value))


def plain(value: object) -> Text:
    return Text(_clean(value))


def safe(value: object) -> str:
    return escape(_clean(value))
