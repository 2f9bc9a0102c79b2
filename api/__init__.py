"""Refund Desk HTTP API (FastAPI)."""
