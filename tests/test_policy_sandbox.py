"""The workflow calls `evaluate` itself, so the policy model and evaluator must import
inside the workflow sandbox (no I/O, no yaml) and the Policy must travel through the
pydantic data converter."""

from __future__ import annotations

import subprocess
import sys
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

from pydantic import BaseModel
from temporalio import workflow
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

# Re-imported inside the sandbox on purpose: that import is what this file tests.
from policies.evaluate import evaluate
from policies.facts import PolicyDecision, PolicyFacts
from policies.model import Policy

with workflow.unsafe.imports_passed_through():
    from policies.loader import load_policy


class EvaluateInput(BaseModel):
    facts: PolicyFacts
    policy: Policy


@workflow.defn(name="PolicySandboxProbe")
class PolicySandboxProbe:
    @workflow.run
    async def run(self, data: EvaluateInput) -> PolicyDecision:
        # The decision must not depend on the server's clock: the facts are anchored on
        # workflow.now(), as the real workflow does.
        now = workflow.now()
        facts = data.facts.model_copy(update={
            "purchased_at": now - timedelta(days=10),
            "period_start": now - timedelta(days=10),
            "period_end": now + timedelta(days=20),
        })
        return evaluate(facts, data.policy, now)


async def test_evaluate_runs_inside_the_workflow_sandbox(time_env: WorkflowEnvironment) -> None:
    policy = load_policy()
    facts = PolicyFacts(reason="technical_issue", currency="jpy", charge_amount=980,
                        purchased_at=datetime(2026, 1, 1, tzinfo=UTC), product_used=True,
                        documents=["ticket 9"])
    queue = f"policy-sandbox-{uuid.uuid4().hex[:8]}"
    async with Worker(time_env.client, task_queue=queue, workflows=[PolicySandboxProbe]):
        decision = await time_env.client.execute_workflow(
            PolicySandboxProbe.run, EvaluateInput(facts=facts, policy=policy),
            id=f"policy-probe-{uuid.uuid4().hex[:8]}", task_queue=queue,
            result_type=PolicyDecision,
        )
    assert (decision.outcome, decision.amount, decision.currency) == ("approve", 653, "jpy")
    assert decision.clause_ids == ["service-not-working", "refund-window", "prorated-refunds"]
    assert decision.policy_version == policy.version


def test_model_and_evaluate_do_not_import_yaml_or_the_loader() -> None:
    code = ("import sys, policies.model, policies.evaluate; "
            "bad = {'yaml', 'policies.loader'} & set(sys.modules); "
            "print(sorted(bad)); sys.exit(1 if bad else 0)")
    root = Path(__file__).resolve().parents[1]
    done = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True,
                          text=True)
    assert done.returncode == 0, done.stdout + done.stderr
