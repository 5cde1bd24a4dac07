"""Generate the JSON Schema files from the msgspec types (the types are the source)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import msgspec

from schemas.events import SCHEMA_FILES

SCHEMA_DIR = Path(__file__).resolve().parent


def schema_path(name: str) -> Path:
    return SCHEMA_DIR / f"{name}.schema.json"


def generate_schema(name: str) -> dict[str, Any]:
    """The JSON Schema (draft 2020-12) for the event named `name`."""
    struct = SCHEMA_FILES[name]
    schema: dict[str, Any] = msgspec.json.schema(struct)
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": f"urn:churn-risk:{name}:v1",
        "title": struct.__name__,
        **schema,
    }


def render(name: str) -> str:
    return json.dumps(generate_schema(name), indent=2, sort_keys=True) + "\n"


def write_all() -> list[Path]:
    written = []
    for name in SCHEMA_FILES:
        path = schema_path(name)
        path.write_text(render(name))
        written.append(path)
    return written
