"""Many rows updated with their own values in one round: ``UPDATE … WHERE pk = %s AND <still as checked>``.

Bulk outcomes (a chunk of deliveries, a chunk of acks) give every row its
own values.  Django's ``bulk_update`` builds a CASE per field and row, which
cost more than the work it records; one parametrised statement run with
``executemany`` costs a fraction, and keeps the compare-and-set condition
per row.
"""

from __future__ import annotations

from typing import Any

from django.db import connections, router
from django.db.models import Model


class Keep:
    """``COALESCE(column, value)``: keep what the row has, else this value."""

    def __init__(self, value: Any) -> None:
        self.value = value

    def __repr__(self) -> str:
        return f"Keep({self.value!r})"


def update_rows(model: type[Model], rows: dict[Any, dict[str, Any]], *, where: dict[str, Any] | None = None) -> int:
    """Set each row's own values where the row (by pk) still matches ``where``; returns how many rows changed."""
    if not rows:
        return 0
    connection = connections[router.db_for_write(model)]
    meta, quote = model._meta, connection.ops.quote_name
    where = where or {}
    groups: dict[tuple[tuple[str, bool], ...], list[Any]] = {}
    for pk, values in rows.items():
        shape = tuple((name, isinstance(values[name], Keep)) for name in sorted(values))
        groups.setdefault(shape, []).append(pk)
    conditions = [f"{quote(meta.pk.column)} = %s"] + [
        f"{quote(meta.get_field(k).column)} IS NULL" if v is None else f"{quote(meta.get_field(k).column)} = %s"
        for k, v in where.items()
    ]
    where_params = [meta.get_field(k).get_db_prep_value(v, connection) for k, v in where.items() if v is not None]
    changed = 0
    for shape, pks in groups.items():
        assignments = []
        for name, keep in shape:
            column = quote(meta.get_field(name).column)
            assignments.append(f"{column} = COALESCE({column}, %s)" if keep else f"{column} = %s")
        sql = (f"UPDATE {quote(meta.db_table)} SET {', '.join(assignments)} "  # noqa: S608 - names from _meta
               f"WHERE {' AND '.join(conditions)}")
        params = []
        for pk in pks:
            values = rows[pk]
            row = [meta.get_field(name).get_db_prep_save(_plain(values[name]), connection) for name, _ in shape]
            params.append([*row, meta.pk.get_db_prep_value(pk, connection), *where_params])
        with connection.cursor() as cursor:
            cursor.executemany(sql, params)
            changed += cursor.rowcount
    return changed


def _plain(value: Any) -> Any:
    return value.value if isinstance(value, Keep) else value
