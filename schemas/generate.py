"""Generate the JSON Schema files from the msgspec types (the types are the source)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import msgspec

from schemas import topics
from schemas.events import SCHEMA_FILES, SCHEMA_VERSIONS

SCHEMA_DIR = Path(__file__).resolve().parent
ASYNCAPI_PATH = SCHEMA_DIR / "asyncapi.json"

# Topic -> (schema file stem, what it carries, does the worker receive or send it,
# what the message key is).
CHANNELS: dict[str, tuple[str, str, str, str]] = {
    topics.ORDERS: ("orders", "Orders placed, keyed by customer_id", "receive", "customer_id"),
    topics.SUPPORT_TICKETS: (
        "support-tickets",
        "Support tickets, keyed by customer_id",
        "receive",
        "customer_id",
    ),
    topics.CUSTOMERS: (
        "customers",
        "Customer profile upserts (compacted)",
        "receive",
        "customer_id",
    ),
    topics.CHURN_RISK: (
        "churn-risk",
        "A customer's risk category changed",
        "send",
        "customer_id",
    ),
    topics.CHURN_RISK_HIGH: (
        "churn-risk",
        "Changes into HIGH only, for marketing to act on: all but those of customers held "
        "out of the campaign (held_out, on churn-risk), whose churn measures its uplift",
        "send",
        "customer_id",
    ),
    topics.CHURN_RISK_CURRENT: (
        "churn-risk",
        "Each customer's latest change (compacted; a tombstone when their state is "
        "deleted): read from the start, everyone's current risk; absent means LOW",
        "send",
        "customer_id",
    ),
    topics.DEAD_LETTER: (
        "dead-letter",
        "Input that could not be processed, with why",
        "send",
        "customer_id",
    ),
    topics.DRIFT_ALERTS: (
        "drift-alerts",
        "Drift alerts raised and cleared, per model feature, score and risk mix",
        "send",
        "feature",
    ),
    topics.BATCHES: (
        "batches",
        "Internal: the record of each committed batch (compacted), written in the "
        "batch's transaction; how a store that lost writes is brought forward",
        "send",
        "<app id>.<input partition>",
    ),
    topics.TICKS: (
        "ticks",
        "Internal: time passing on a quiet input partition, written by the worker into "
        "that partition and read with its inputs",
        "send",
        "none (the input partition is the tick's)",
    ),
}


def schema_path(name: str) -> Path:
    return SCHEMA_DIR / f"{name}.schema.json"


def generate_schema(name: str) -> dict[str, Any]:
    """The JSON Schema (draft 2020-12) for the event named `name`."""
    struct = SCHEMA_FILES[name]
    schema: dict[str, Any] = msgspec.json.schema(struct)
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": f"urn:churn-risk:{name}:v{SCHEMA_VERSIONS.get(name, 1)}",
        "title": struct.__name__,
        **schema,
    }


def render(name: str) -> str:
    return json.dumps(generate_schema(name), indent=2, sort_keys=True) + "\n"


def generate_asyncapi() -> dict[str, Any]:
    """The AsyncAPI 3.0 document of the worker's topics, pointing at the schema files."""
    channels: dict[str, Any] = {}
    operations: dict[str, Any] = {}
    for topic, (stem, description, action, key) in CHANNELS.items():
        channels[topic] = {
            "address": topic,
            "description": description,
            "messages": {
                SCHEMA_FILES[stem].__name__: {
                    "contentType": "application/json",
                    "payload": {"$ref": f"./{stem}.schema.json"},
                    "bindings": {"kafka": {"key": {"type": "string", "description": key}}},
                }
            },
        }
        operations[f"{action}-{topic}"] = {
            "action": action,
            "channel": {"$ref": f"#/channels/{topic}"},
        }
    return {
        "asyncapi": "3.0.0",
        "info": {
            "title": "churn-risk scorer",
            "version": "1.0.0",
            "description": "Events the churn-risk worker consumes and publishes (contracts v1).",
        },
        "channels": channels,
        "operations": operations,
    }


def write_all() -> list[Path]:
    written = []
    for name in SCHEMA_FILES:
        path = schema_path(name)
        path.write_text(render(name))
        written.append(path)
    ASYNCAPI_PATH.write_text(json.dumps(generate_asyncapi(), indent=2, sort_keys=True) + "\n")
    written.append(ASYNCAPI_PATH)
    return written
