"""Per-customer features: one definition, an online Redis store and an offline path."""
