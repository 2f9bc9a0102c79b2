"""The BillingIncident workflow (see workflow.py): one module per step of an incident
(dry_run, drain, report) around a thin workflow class and one IncidentRuntime."""

from .workflow import BillingIncident

__all__ = ["BillingIncident"]
