"""Patches from what the view holds to what was decided. Pure: no I/O."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


def merge_patch(old: Mapping[str, Any], new: Mapping[str, Any]) -> dict[str, Any]:
    """The JSON merge patch (RFC 7386) that turns `old` into `new`. A merge patch keeps every key it does
    not name, so each key `new` no longer has is named with null; objects are patched key by key, anything
    else (lists, scalars) is sent whole. A null inside `new` reads as "no such key"."""
    patch: dict[str, Any] = {key: None for key in old if key not in new}
    for key, value in new.items():
        before = old.get(key)
        if isinstance(value, Mapping) and isinstance(before, Mapping):
            nested = merge_patch(before, value)
            if nested:
                patch[key] = nested
        elif key not in old or value != before or type(value) is not type(before):
            patch[key] = value
    return patch
