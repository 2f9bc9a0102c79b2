"""Pieces every Refund Desk process shares: settings, the Temporal client, boundary models."""
