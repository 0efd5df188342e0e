"""Strings given to numeric or boolean `TrainingArguments` fields: a clear error naming the field.

`TrainingArguments(learning_rate="1e-3")` is easy to write from a YAML or JSON config (YAML reads `1e-3` as a
string; `HfArgumentParser.parse_dict` passes values through unconverted). transformers keeps the string and fails
later with an error that names no argument (`'<=' not supported between 'float' and 'str'` in the optimiser,
`batch_size should be a positive integer value` in the DataLoader), or, for a boolean, treats `"False"` as true.
transformers converts nothing here, so neither do we: the field is named before anything runs. The field types are
read from the dataclass annotations at run time, so new transformers fields are covered as they appear.
"""

from __future__ import annotations

import dataclasses
import functools
import types
import typing
from typing import Any

__all__ = ["check_string_values", "typed_fields"]


@functools.cache
def typed_fields(cls: type) -> dict[str, str]:
    """The fields of dataclass `cls` annotated only with `int`/`float` ("number"; None allowed) or only `bool`
    ("bool"; None allowed)."""
    hints = typing.get_type_hints(cls)
    kinds = {}
    for f in dataclasses.fields(cls):
        hint = hints.get(f.name)
        union = typing.get_origin(hint) in (typing.Union, types.UnionType)
        members = set(typing.get_args(hint)) if union else {hint}
        members.discard(type(None))
        if members == {bool}:
            kinds[f.name] = "bool"
        elif members and members <= {int, float}:
            kinds[f.name] = "number"
    return kinds


def _suggestion(name: str, kind: str, value: str) -> str:
    if kind == "bool":
        return f"{name}=True or {name}=False"
    try:
        number = float(value)
    except ValueError:
        return f"a number as `{name}`"
    return f"{name}={int(number) if number.is_integer() and 'e' not in value.lower() else number!r}"


def check_string_values(args: Any) -> None:
    """Raise a TypeError naming the first numeric or boolean field of `args` that holds a string."""
    for name, kind in typed_fields(type(args)).items():
        value = getattr(args, name)
        if isinstance(value, str):
            expected = "True or False" if kind == "bool" else "a number"
            raise TypeError(
                f"`{name}` must be {expected}, got the string {value!r}: pass {_suggestion(name, kind, value)}. "
                "TrainingArguments does not convert strings (nor does transformers; its HfArgumentParser converts "
                "command-line values)."
            )
