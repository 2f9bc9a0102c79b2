"""The local stack: what `make run` starts and supervises, and the pieces tests reuse."""
