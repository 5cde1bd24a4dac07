"""Scoring core: model artifact, risk policy and the batch pipeline (no Kafka, no Redis)."""
