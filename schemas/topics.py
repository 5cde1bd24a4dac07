"""Topic names: part of the contract, defined once."""

ORDERS = "orders"
SUPPORT_TICKETS = "support-tickets"
CUSTOMERS = "customers"
CHURN_RISK = "churn-risk"
# Transitions into HIGH only, so marketing automation need not read every change.
CHURN_RISK_HIGH = "churn-risk-high"
DEAD_LETTER = "churn-dead-letter"

# The inputs, in the order events of equal event time are applied: a profile change
# before an order or ticket of the same instant (`scoring.merge`).
INPUT_TOPICS = (CUSTOMERS, ORDERS, SUPPORT_TICKETS)


def qualified(name: str, prefix: str = "") -> str:
    """A topic's name on the cluster: a deployment (or a test) may prefix all of them."""
    return prefix + name
