"""Many rows written in one round: one parametrised statement run with ``executemany``.

Bulk outcomes (a chunk of deliveries, a chunk of acks) give every row its
own values.  Django's ``bulk_update`` builds a CASE per field and row, and
``bulk_create`` a placeholder per field and row, which cost more than the
work they record; one statement run with ``executemany`` costs a fraction,
and (for updates) keeps the compare-and-set condition per row:
``UPDATE … WHERE pk = %s AND <still as checked>``.
"""

from __future__ import annotations

from collections.abc import Sequence
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


def insert_rows(objs: Sequence[Model]) -> None:
    """INSERT unsaved instances of one model (auto primary keys are left to the database and not read back)."""
    if not objs:
        return
    model = type(objs[0])
    connection = connections[router.db_for_write(model)]
    meta, quote = model._meta, connection.ops.quote_name
    fields = [f for f in meta.local_concrete_fields if f is not meta.auto_field and not f.generated]
    sql = (f"INSERT INTO {quote(meta.db_table)} ({', '.join(quote(f.column) for f in fields)}) "  # noqa: S608
           f"VALUES ({', '.join(['%s'] * len(fields))})")
    params = [[f.get_db_prep_save(f.pre_save(obj, True), connection) for f in fields] for obj in objs]
    with connection.cursor() as cursor:
        cursor.executemany(sql, params)
