"""CelRow / CdrRow built by `model._slot_init`'s __init__: a dataclass's behaviour, kept."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime

import pytest
from sipstack_agent.model import CdrRow, CelRow

T = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)


@pytest.mark.parametrize("cls", [CelRow, CdrRow])
def test_defaults_positional_and_keywords_as_the_fields_say(cls: type) -> None:
    fields = dataclasses.fields(cls)
    required = [f for f in fields if f.default is dataclasses.MISSING]
    values = {f.name: (T if f.type == "datetime" else f"v-{f.name}") for f in required}
    row = cls(**values)
    for f in fields:
        want = values.get(f.name, f.default)
        assert getattr(row, f.name) == want, f.name
    positional = cls(*(values[f.name] for f in required))
    assert positional == row and hash(positional) == hash(row)
    every = {f.name: getattr(row, f.name) for f in fields}
    assert cls(*every.values()) == cls(**every) == row
    assert dataclasses.replace(row, source="ami").source == "ami"
    assert dataclasses.astuple(row) == tuple(every.values())
    with pytest.raises(dataclasses.FrozenInstanceError):
        row.source = "x"  # type: ignore[misc]
    with pytest.raises(TypeError):
        cls(*list(values.values())[:-1])  # a required field missing
    with pytest.raises(TypeError):
        cls(**values, nosuchfield=1)
    with pytest.raises(TypeError):
        cls(*every.values(), "one too many")
    assert repr(row).startswith(f"{cls.__name__}(")
    assert cls.__init__.__qualname__ == f"{cls.__name__}.__init__"
