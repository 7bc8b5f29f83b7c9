"""The slice of SOQL the Salesforce fake answers, as the SOQL reference describes it:

    SELECT f1, f2[, (SELECT g1, g2 FROM ChildRelationship [ORDER BY g [ASC|DESC]] [LIMIT n])]
    FROM Object [WHERE cond (AND|OR) cond ...] [ORDER BY f [ASC|DESC]] [LIMIT n]

with `cond` = `Field = literal` or `Field != literal`, literals 'text' (backslash escapes),
true, false, null. AND binds tighter than OR, as in SOQL. Parse errors are
MALFORMED_QUERY; a field that cannot be filtered (long text) is refused as Salesforce does.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

SELECT = re.compile(
    r"^\s*SELECT\s+(?P<fields>.+?)\s+FROM\s+(?P<object>\w+)"
    r"(?:\s+WHERE\s+(?P<where>.+?))?"
    r"(?:\s+ORDER\s+BY\s+(?P<order>\w+)(?:\s+(?P<direction>ASC|DESC))?)?"
    r"(?:\s+LIMIT\s+(?P<limit>\d+))?\s*$",
    re.IGNORECASE | re.DOTALL,
)
SUBQUERY = re.compile(r"\(\s*(SELECT\s+[^()]+)\)", re.IGNORECASE)
CONDITION = re.compile(
    r"^\s*(?P<field>\w+)\s*(?P<op>!=|=)\s*(?P<value>'(?:[^'\\]|\\.)*'|true|false|null)\s*$",
    re.IGNORECASE | re.DOTALL,
)
ESCAPES = {"n": "\n", "r": "\r", "t": "\t", "b": "\b", "f": "\f"}


class SoqlError(Exception):
    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass
class Query:
    object: str
    fields: list[str]
    where: list[list[tuple[str, str, Any]]]  # OR of ANDs of (field, op, value)
    order: str | None = None
    descending: bool = False
    limit: int | None = None
    children: list[Query] = field(default_factory=list)  # subqueries, `object` = relationship name


def _literal(text: str) -> Any:
    lowered = text.lower()
    if lowered in ("true", "false"):
        return lowered == "true"
    if lowered == "null":
        return None
    return re.sub(r"\\(.)", lambda m: ESCAPES.get(m.group(1), m.group(1)), text[1:-1], flags=re.DOTALL)


def _split_outside_quotes(text: str, keyword: str) -> list[str]:
    """Split on ` AND ` / ` OR ` that are not inside a quoted literal."""
    parts, current, quoted, i = [], "", False, 0
    pattern = re.compile(rf"\s+{keyword}\s+", re.IGNORECASE)
    while i < len(text):
        char = text[i]
        if char == "\\" and quoted:
            current += text[i:i + 2]
            i += 2
            continue
        if char == "'":
            quoted = not quoted
        if not quoted:
            match = pattern.match(text, i)
            if match:
                parts.append(current)
                current, i = "", match.end()
                continue
        current += char
        i += 1
    parts.append(current)
    return parts


def parse(soql: str) -> Query:
    children = [parse(m.group(1)) for m in SUBQUERY.finditer(soql)]
    flat = SUBQUERY.sub("__child__", soql)
    match = SELECT.match(flat)
    if not match:
        raise SoqlError("MALFORMED_QUERY", f"unexpected token in query: {soql[:80]}")
    fields = [f.strip() for f in match["fields"].split(",") if f.strip() and f.strip() != "__child__"]
    where: list[list[tuple[str, str, Any]]] = []
    if match["where"]:
        for alternative in _split_outside_quotes(match["where"], "OR"):
            conjunction = []
            for part in _split_outside_quotes(alternative, "AND"):
                condition = CONDITION.match(part)
                if not condition:
                    raise SoqlError("MALFORMED_QUERY", f"unexpected token: {part.strip()[:80]}")
                conjunction.append((condition["field"], condition["op"], _literal(condition["value"])))
            where.append(conjunction)
    return Query(
        object=match["object"], fields=fields, where=where, order=match["order"],
        descending=(match["direction"] or "").upper() == "DESC",
        limit=int(match["limit"]) if match["limit"] else None, children=children,
    )


def matches(row: dict[str, Any], where: list[list[tuple[str, str, Any]]]) -> bool:
    if not where:
        return True
    return any(all((row.get(f) == v) == (op == "=") for f, op, v in conjunction) for conjunction in where)


def select(rows: list[dict[str, Any]], query: Query) -> list[dict[str, Any]]:
    chosen = [r for r in rows if matches(r, query.where)]
    if query.order:
        chosen.sort(key=lambda r: (r.get(query.order) or "", r["Id"]), reverse=query.descending)
    if query.limit is not None:
        chosen = chosen[: query.limit]
    return chosen
