"""JSON text measured before ``json.loads`` sees it (pure).

``json.loads`` recurses once per nesting level, so a deep enough text ends
in RecursionError, and it builds every value it reads: a 1 MiB
``{"errors":[{},{},…]}`` is 350,000 objects, seconds and hundreds of
megabytes by the time they are checked and stored.  Ack files and mappings
typed into a form are measured first, outside string literals: how deep
their brackets nest and how many values they hold, token by token, and only
until one passes its maximum.
"""

from __future__ import annotations

import re
import sys
from typing import NamedTuple

# The tokens that shape a text: a string literal (skipped whole, an unterminated one running to the end of the
# text; the atomic group never backtracks and the tail always matches, so no quote is rescanned to the end:
# linear, where requiring a closing quote made a file of "\"\"\"… quadratic), an empty array or object, a
# bracket, a comma.
_TOKEN = re.compile(r'"(?>[^"\\]*(?:\\.[^"\\]*)*)(?:"|\\?\Z)|[\[{][ \t\n\r]*[\]}]|[\[\]{},]', re.S)


class Shape(NamedTuple):
    depth: int  # the deepest nesting of arrays/objects seen
    values: int  # JSON values counted, nested ones included (object keys are not values)


def measure(text: str, *, max_depth: int = sys.maxsize, max_values: int = sys.maxsize) -> Shape:
    """How deep ``text`` nests and how many values it holds, scanned until either passes its maximum.

    A value other than the first follows a comma or opens a container that is not empty, so the count is
    1 + commas + such containers: exact for valid JSON, and for any other text at least what ``json.loads``
    builds before it gives up.  Brackets and commas inside strings do not count ("[[[" in a message is harmless).
    Linear, and it stops early: at a maximum, or at a bracket that closes nothing (json.loads refuses it there).
    """
    depth = deepest = 0
    values = 1
    for token in _TOKEN.finditer(text):
        first = text[token.start()]
        if first == ",":
            values += 1
        elif first in "[{" and token.end() - token.start() > 1:  # empty: a value the comma before it counted
            deepest = max(deepest, depth + 1)
        elif first in "[{":
            values += 1  # its first member
            depth += 1
            deepest = max(deepest, depth)
        elif first != '"':
            depth -= 1
        if deepest > max_depth or values > max_values or depth < 0:  # below 0: not JSON, json.loads stops here
            break
    return Shape(deepest, values)


def nested_deeper_than(text: str, limit: int) -> bool:
    """Does ``text`` open more than ``limit`` arrays/objects inside each other?"""
    return measure(text, max_depth=limit).depth > limit
