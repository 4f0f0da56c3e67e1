"""Jurisdictions: six-digit administrative division codes (GB/T 2260) forming a tree.

The tree has three levels that matter here: central (one reserved code), province
(``PP0000``) and city (``PPCC00``). County codes (``PPCCXX``) hang under their city.
A principal may act on a jurisdiction only inside its own subtree.
"""

from __future__ import annotations

import re
from enum import StrEnum

from shared.errors import InvalidInput

CENTRAL = "100000"
"""Reserved code for the central (national) level; GB/T 2260 has no code for it."""

_CODE = re.compile(r"[1-9][0-9]{5}")  # ASCII digits only; used with fullmatch


class Level(StrEnum):
    CENTRAL = "central"
    PROVINCE = "province"
    CITY = "city"
    COUNTY = "county"


def validate(code: str) -> str:
    """Return ``code`` if it is a well-formed jurisdiction code, else raise ``InvalidInput``."""
    if not isinstance(code, str) or not _CODE.fullmatch(code):
        raise InvalidInput("invalid_jurisdiction", f"{code!r} is not a six-digit division code")
    return code


def level(code: str) -> Level:
    validate(code)
    if code == CENTRAL:
        return Level.CENTRAL
    if code.endswith("0000"):
        return Level.PROVINCE
    if code.endswith("00"):
        return Level.CITY
    return Level.COUNTY


def parent(code: str) -> str | None:
    """The jurisdiction directly above ``code``; ``None`` for the central level."""
    lv = level(code)
    if lv is Level.CENTRAL:
        return None
    if lv is Level.PROVINCE:
        return CENTRAL
    if lv is Level.CITY:
        return code[:2] + "0000"
    return code[:4] + "00"


def ancestors(code: str) -> list[str]:
    """``code`` and every jurisdiction above it, nearest first."""
    chain = [code]
    while (up := parent(chain[-1])) is not None:
        chain.append(up)
    return chain


def covers(principal_jurisdiction: str, target: str) -> bool:
    """True when ``target`` lies in the subtree rooted at ``principal_jurisdiction``."""
    return principal_jurisdiction in ancestors(target)


def ancestors_sql(column: str = "jurisdiction") -> str:
    """SQL array of ``column`` and every jurisdiction above it, mirroring ``ancestors``."""
    c = column
    return f"""ARRAY[{c},
        CASE WHEN {c} LIKE '%00' AND {c} NOT LIKE '%0000' THEN substr({c},1,2)||'0000'
             WHEN {c} NOT LIKE '%00' THEN substr({c},1,4)||'00' END,
        CASE WHEN {c} NOT LIKE '%00' THEN substr({c},1,2)||'0000' END,
        '{CENTRAL}']"""


def in_subtree_sql(parameter: str, column: str = "jurisdiction") -> str:
    """SQL condition: ``column`` lies in the subtree of the jurisdiction bound to ``parameter``."""
    return f"{parameter} = ANY({ancestors_sql(column)})"
