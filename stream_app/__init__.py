"""The streaming worker (Faust adapter), its settings, metrics, CLI and demo."""
