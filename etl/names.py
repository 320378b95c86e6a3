"""Warehouse names from data: the contract's snake_case, and safe event table names.

Event names and property keys are data, never code or paths: every name leaving here is
lower snake_case of letters, digits and `_`, starts with a letter or `_`, and is short
enough for a folder name. SQL still quotes it.
"""

from __future__ import annotations

import hashlib
import unicodedata
from collections.abc import Container
from functools import lru_cache

MAX_NAME_BYTES = 120


def _short_hash(text: str) -> str:
    return hashlib.sha1(text.encode("utf-8", "surrogatepass")).hexdigest()[:8]


def is_mark(char: str) -> bool:
    """A combining mark (the vowel signs of Devanagari, a decomposed accent): part of its letter."""
    return unicodedata.category(char)[0] == "M"


@lru_cache(maxsize=65_536)
def snake_case(text: str) -> str:
    """`productID` → `product_id`, `HTMLParser` → `html_parser`, `line2Text` → `line2_text`.

    Letters of any script are lower-cased and kept, with their combining marks (`हिन्दी` stays
    whole; text is NFC-normalised first, so a decomposed `é` is the composed one); a capital
    starts a new word when it follows a lower-case letter or digit, or ends a run of capitals
    before a lower-case letter; digits (0-9 of any script) stay with the word before them; any
    other run of characters (`½`, `²`, `Ⅻ`, punctuation) is one `_`.
    """
    text = unicodedata.normalize("NFC", text)
    out: list[str] = []
    previous = "separator"
    for index, char in enumerate(text):
        if char.isalpha() and char.isupper():
            following = text[index + 1] if index + 1 < len(text) else ""
            if previous in ("lower", "digit") or (previous == "upper" and following.islower()):
                out.append("_")
            out.append(char)
            previous = "upper"
        elif char.isalpha():
            out.append(char)
            previous = "lower"
        elif char.isdecimal():
            out.append(char)
            previous = "digit"
        elif previous != "separator" and not char.isascii() and is_mark(char):
            out.append(char)
        else:
            if previous != "separator":
                out.append("_")
            previous = "separator"
    # Lower-cased whole, not letter by letter: a word-final capital sigma is `ς` (`ΟΔΟΣ` → `οδος`).
    return "".join(out).lower().strip("_")


def bounded(name: str) -> str:
    """Keep a name within a folder-safe length, with a hash of the whole name so it stays unique
    (of the name, not the text it came from: texts that share a name share a table)."""
    if len(name.encode()) <= MAX_NAME_BYTES:
        return name
    cut = name.encode()[: MAX_NAME_BYTES - 9].decode("utf-8", "ignore").rstrip("_")
    return f"{cut}_{_short_hash(name)}"


@lru_cache(maxsize=65_536)
def event_table_name(event_text: str) -> str:
    """The Segment-style warehouse name of an event ("Order Completed" → `order_completed`)."""
    name = snake_case(event_text)
    if not name:
        return f"event_{_short_hash(event_text)}"
    if name[0].isdigit():
        name = f"event_{name}"
    return bounded(name)


@lru_cache(maxsize=65_536)
def context_key_name(key: str) -> str:
    """One key of a `context` path as a column-name part; a key with no letters or digits gets a
    hash, so its value keeps a column of its own."""
    return snake_case(key) or f"key_{_short_hash(key)}"


def is_context_column(name: str) -> bool:
    """`context` (a context that is not an object) and every `context_…` column. No property
    column starts so: the registry prefixes those names with `property_`."""
    return name.startswith("context")


def unique_name(base: str, taken: Container[str]) -> str:
    """`base`, or the first of `base_2`, `base_3`, … not in `taken`: the contract's rule for two
    keys that map to one name."""
    if base not in taken:
        return base
    suffix = 2
    while f"{base}_{suffix}" in taken:
        suffix += 1
    return f"{base}_{suffix}"
