"""Command-line entry points behind starter.py."""
