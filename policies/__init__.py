"""Refund policy as code: a versioned policy model, policy files and a pure evaluator.
No I/O but reading a policy file; workflows import the model and `evaluate`."""
