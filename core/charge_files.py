"""The affected charges of a billing incident as a file: CSV or JSON lines of charge
(`ch_`, `py_`) or payment-intent (`pi_`) ids, as a billing export gives them. One parser
for the CLI and the API; a bad line is refused with its number, so nothing starts."""

from __future__ import annotations

import csv
import io
import json
import re
from typing import Literal

from activities.stripe_models import PURCHASE_ID_PATTERN

FileFormat = Literal["csv", "jsonl"]
ID_COLUMNS = ("charge_id", "charge", "payment_intent_id", "payment_intent", "id")
_ID = re.compile(PURCHASE_ID_PATTERN)


class ChargeFileError(ValueError):
    """The file cannot be read as charge ids; the message names the line."""


def format_of(filename: str) -> FileFormat:
    name = filename.lower()
    if name.endswith((".jsonl", ".ndjson", ".json")):
        return "jsonl"
    if name.endswith((".csv", ".txt")):
        return "csv"
    raise ChargeFileError(f"{filename}: expected a .csv or .jsonl file")


def parse_charge_file(text: str, fmt: FileFormat) -> tuple[list[str], int]:
    """The ids in file order without repeats, and how many repeats were dropped."""
    ids = _csv_ids(text) if fmt == "csv" else _jsonl_ids(text)
    unique = list(dict.fromkeys(ids))
    if not unique:
        raise ChargeFileError("the file holds no charge or payment-intent ids")
    return unique, len(ids) - len(unique)


def _checked(value: str, line: int) -> str:
    value = value.strip()
    if not _ID.match(value):
        raise ChargeFileError(f"line {line}: {value[:80]!r} is not a charge (ch_...) or "
                              "payment-intent (pi_...) id")
    return value


def _csv_ids(text: str) -> list[str]:
    rows = [(n, row) for n, row in enumerate(csv.reader(io.StringIO(text)), start=1)
            if any(cell.strip() for cell in row)]
    if not rows:
        return []
    column = 0
    header = [cell.strip().lower() for cell in rows[0][1]]
    named = [name for name in ID_COLUMNS if name in header]
    if named:
        column = header.index(named[0])
        rows = rows[1:]
    elif not _ID.match(rows[0][1][0].strip()):
        raise ChargeFileError(f"line 1: no id column ({', '.join(ID_COLUMNS)}) and no id "
                              "in the first column")
    out = []
    for n, row in rows:
        if column >= len(row):
            raise ChargeFileError(f"line {n}: no column {column + 1}")
        out.append(_checked(row[column], n))
    return out


def _jsonl_ids(text: str) -> list[str]:
    out = []
    for n, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            value = json.loads(line)
        except json.JSONDecodeError as exc:
            raise ChargeFileError(f"line {n}: not JSON ({exc.msg})") from None
        if isinstance(value, dict):
            found = [value[k] for k in ID_COLUMNS if isinstance(value.get(k), str)]
            if not found:
                raise ChargeFileError(f"line {n}: no {' / '.join(ID_COLUMNS)} field")
            value = found[0]
        if not isinstance(value, str):
            raise ChargeFileError(f"line {n}: expected an id or an object with one")
        out.append(_checked(value, n))
    return out
