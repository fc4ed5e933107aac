"""JSON text checked before ``json.loads`` sees it (pure).

``json.loads`` recurses once per nesting level, so a deep enough text ends
in RecursionError; ack files and mappings typed into a form are refused
first, by counting brackets outside string literals in linear time.
"""

from __future__ import annotations

import re

# JSON string literals, an unterminated one running to the end of the text. The
# atomic group never backtracks and the tail always matches, so no quote is
# rescanned to the end: linear. (Requiring a closing quote made a file of
# "\"\"\"… quadratic: close to an hour for 1 MiB.)
_STRING = re.compile(r'"(?>[^"\\]*(?:\\.[^"\\]*)*)(?:"|\\?\Z)', re.S)
_NOT_BRACKET = re.compile(r"[^\[\]{}]+")


def nested_deeper_than(text: str, limit: int) -> bool:
    """Does ``text`` open more than ``limit`` arrays/objects inside each other? ("[[[" in a string is harmless.)"""
    depth = 0
    for ch in _NOT_BRACKET.sub("", _STRING.sub("", text)):
        depth += 1 if ch in "[{" else -1
        if depth > limit:
            return True
    return False
