"""Many rows written in few round trips, each row with its own values and its own compare-and-set.

Bulk outcomes (a chunk of deliveries, a chunk of acks) give every row its
own values.  Django's ``bulk_update`` builds a CASE per field and row, and
``bulk_create`` a placeholder per field and row, which cost more than the
work they record.  Here an update keeps the compare-and-set condition per
row (``… WHERE pk = <row> AND <still as checked>``) and costs:

- on SQLite (in-process, no round trips): one prepared statement run with
  ``executemany``;
- on PostgreSQL: one ``UPDATE … FROM (VALUES …)`` / multi-row ``INSERT``,
  and the statements of one step (:func:`run_statements`) sent as one query: seen from
  a busy worker every statement costs a round trip and a wake-up, which was
  most of a chunk's time (see bench/README.md).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from django.db import connections, router
from django.db.models import Model


class Keep:
    """``COALESCE(column, value)``: keep what the row has, else this value."""

    def __init__(self, value: Any) -> None:
        self.value = value

    def __repr__(self) -> str:
        return f"Keep({self.value!r})"


@dataclass
class Statement:
    """One SQL statement and its parameters, built here and sent by :func:`run_statements`."""

    sql: str
    params: list[Any]
    many: bool = False  # params is a list of rows (executemany)


def _connection(model: type[Model]) -> Any:
    return connections[router.db_for_write(model)]


def _sets_values(connection: Any) -> bool:
    """Set-based statements (and several in one query) where round trips cost: PostgreSQL with
    client-side binding (Django's default; server-side binding refuses several statements in one query)."""
    return connection.vendor == "postgresql" and not connection.settings_dict["OPTIONS"].get("server_side_binding")


def update_statements(model: type[Model], rows: dict[Any, dict[str, Any]], *,
                      where: dict[str, Any] | None = None) -> list[Statement]:
    """Set each row's own values where the row (by pk) still matches ``where``: one statement per shape of row."""
    connection = _connection(model)
    meta, quote = model._meta, connection.ops.quote_name
    table, where = quote(meta.db_table), where or {}
    groups: dict[tuple[tuple[str, bool], ...], list[Any]] = {}
    for pk, values in rows.items():
        shape = tuple((name, isinstance(values[name], Keep)) for name in sorted(values))
        groups.setdefault(shape, []).append(pk)
    conditions = [f"{table}.{quote(meta.get_field(k).column)} " + ("IS NULL" if v is None else "= %s")
                  for k, v in where.items()]
    where_params = [meta.get_field(k).get_db_prep_value(v, connection) for k, v in where.items() if v is not None]
    statements = []
    for shape, pks in groups.items():
        fields = [meta.get_field(name) for name, _ in shape]
        prep = [[f.get_db_prep_save(_plain(rows[pk][f.name]), connection) for f in fields]
                + [meta.pk.get_db_prep_value(pk, connection)] for pk in pks]
        if _sets_values(connection):
            row = "(" + ", ".join(f"%s::{f.cast_db_type(connection)}" for f in [*fields, meta.pk]) + ")"
            assignments = [_assign(quote(f.column), f"v.v{i}", keep, table)
                           for i, (f, (_, keep)) in enumerate(zip(fields, shape, strict=True))]
            aliases = ", ".join(f"v{i}" for i in range(len(fields) + 1))  # the row's values, then its pk
            checks = [f"{table}.{quote(meta.pk.column)} = v.v{len(fields)}", *conditions]
            sql = (f"UPDATE {table} SET {', '.join(assignments)} "  # noqa: S608 - names from _meta
                   f"FROM (VALUES {', '.join([row] * len(prep))}) AS v({aliases}) "
                   f"WHERE {' AND '.join(checks)}")
            statements.append(Statement(sql, [p for values in prep for p in values] + where_params))
        else:
            assignments = [_assign(quote(f.column), "%s", keep, table)
                           for f, (_, keep) in zip(fields, shape, strict=True)]
            checks = [f"{table}.{quote(meta.pk.column)} = %s", *conditions]
            sql = f"UPDATE {table} SET {', '.join(assignments)} WHERE {' AND '.join(checks)}"  # noqa: S608
            statements.append(Statement(sql, [[*values, *where_params] for values in prep], many=True))
    return statements


def _assign(column: str, value: str, keep: bool, table: str) -> str:
    return f"{column} = COALESCE({table}.{column}, {value})" if keep else f"{column} = {value}"


def _plain(value: Any) -> Any:
    return value.value if isinstance(value, Keep) else value


def insert_statements(objs: Sequence[Model]) -> list[Statement]:
    """INSERT unsaved instances of one model (auto primary keys are left to the database and not read back)."""
    if not objs:
        return []
    model = type(objs[0])
    connection = _connection(model)
    meta, quote = model._meta, connection.ops.quote_name
    fields = [f for f in meta.local_concrete_fields if f is not meta.auto_field and not f.generated]
    sql = f"INSERT INTO {quote(meta.db_table)} ({', '.join(quote(f.column) for f in fields)}) VALUES "  # noqa: S608
    row = f"({', '.join(['%s'] * len(fields))})"
    params = [[f.get_db_prep_save(f.pre_save(obj, True), connection) for f in fields] for obj in objs]
    if not _sets_values(connection):
        return [Statement(sql + row, params, many=True)]
    size = connection.ops.bulk_batch_size(fields, objs)
    return [Statement(sql + ", ".join([row] * len(batch)), [p for values in batch for p in values])
            for batch in (params[start:start + size] for start in range(0, len(params), size))]


def run_statements(model: type[Model], statements: Sequence[Statement]) -> list[int]:
    """Run ``statements`` (on ``model``'s database) in order; how many rows each one changed.

    On PostgreSQL they go as one query (one round trip); its results come back one after the other.
    """
    if not statements:
        return []
    connection = _connection(model)
    with connection.cursor() as cursor:
        if _sets_values(connection) and not any(s.many for s in statements):
            cursor.execute(";\n".join(s.sql for s in statements), [p for s in statements for p in s.params])
            counts = [cursor.rowcount]
            while cursor.nextset():
                counts.append(cursor.rowcount)
            return counts
        counts = []
        for s in statements:
            (cursor.executemany if s.many else cursor.execute)(s.sql, s.params)
            counts.append(cursor.rowcount)
        return counts


def update_rows(model: type[Model], rows: dict[Any, dict[str, Any]], *, where: dict[str, Any] | None = None) -> int:
    """:func:`update_statements`, run; returns how many rows changed."""
    return sum(run_statements(model, update_statements(model, rows, where=where)))

