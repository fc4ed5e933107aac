"""The ERP's texts as orderflow keeps them in the fields of a parsed ack: clipped, and a bounded number of errors.

They are stored on the export, joined into the rejection's message and written into its event, its log line and
alert mails, for each of the up to a hundred files a poll handles at once; the ERP's whole answer is kept apart
(``Ack.body``, itself bounded by the file's size and number of values).
"""

from __future__ import annotations

import json
from itertools import islice
from typing import Any

#: Characters of one ERP text kept; a longer one ends in "…".
ACK_TEXT_MAX = 2_000
#: Errors kept; the rest are counted in a last entry.  A rejection listing more is still a rejection, so it is
#: applied, not refused as malformed (which would leave the order unanswered): the first hundred tell an admin
#: what is wrong, and all of them are in the stored answer.
ACK_MAX_ERRORS = 100
#: ...and no more of their text (as JSON) than this, the first error always kept.
ACK_ERRORS_MAX_CHARS = 20_000
_ERROR_FIELDS = 20  # of one error (the contract names three): so the first one, kept whatever its size, is bounded


def clip(text: str, limit: int = ACK_TEXT_MAX) -> str:
    """``text``, or its first ``limit`` - 1 characters and "…"."""
    return text if len(text) <= limit else text[:limit - 1] + "…"


def _field(value: Any) -> Any:
    """One field of an error as kept: a text clipped; a nested value (not in the contract) as it is while its JSON
    is short, else that JSON, clipped."""
    if isinstance(value, str):
        return clip(value)
    if isinstance(value, dict | list):
        text = json.dumps(value, ensure_ascii=False)
        return value if len(text) <= ACK_TEXT_MAX else clip(text)
    return value


def stored_errors(errors: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The first ACK_MAX_ERRORS of ``errors`` within ACK_ERRORS_MAX_CHARS, each with its first fields clipped, and
    an entry that counts the errors left out, if any."""
    kept: list[dict[str, Any]] = []
    room = ACK_ERRORS_MAX_CHARS
    for error in errors[:ACK_MAX_ERRORS]:
        entry = {clip(key): _field(value) for key, value in islice(error.items(), _ERROR_FIELDS)}
        size = len(json.dumps(entry))
        if kept and size > room:
            break
        kept.append(entry)
        room -= size
    if left := len(errors) - len(kept):
        kept.append({"message": f"… and {left} more error{'s' if left > 1 else ''} (all in the ERP's answer)"})
    return kept
