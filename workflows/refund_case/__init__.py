"""The RefundCase workflow, one module per playbook step (see workflow.py). The step
modules are deterministic and hold no module state, so the workflow passes them through
the sandbox instead of re-importing them for every case."""

from .workflow import RefundCase

__all__ = ["RefundCase"]
