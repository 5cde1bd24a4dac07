"""Event contracts: msgspec types and the JSON Schema files generated from them."""

from schemas.events import (
    INPUT_EVENTS,
    PROBLEM_DELIVERY_STATUSES,
    SCHEMA_FILES,
    ChurnRiskChanged,
    Customer,
    DeadLetter,
    Order,
    OrderItem,
    Reason,
    RiskLevel,
    SupportTicket,
    Trigger,
)
from schemas.generate import SCHEMA_DIR, generate_schema, schema_path

__all__ = [
    "INPUT_EVENTS",
    "PROBLEM_DELIVERY_STATUSES",
    "SCHEMA_DIR",
    "SCHEMA_FILES",
    "ChurnRiskChanged",
    "Customer",
    "DeadLetter",
    "Order",
    "OrderItem",
    "Reason",
    "RiskLevel",
    "SupportTicket",
    "Trigger",
    "generate_schema",
    "schema_path",
]
