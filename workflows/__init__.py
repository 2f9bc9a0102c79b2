"""Durable orchestration only: the RefundCase workflow, its state and its pure helpers."""
