"""A workflow imports the email models inside the workflow sandbox (as RefundCase does,
even without passing imports through) and sends an email through the real activity.
This module imports nothing the sandbox refuses: settings are built inside the test."""

from __future__ import annotations

from temporalio import workflow
from temporalio.worker import Worker

from activities.email_models import (
    EMAIL_RETRY_POLICY,
    EMAIL_START_TO_CLOSE,
    SEND_EMAIL,
    EmailInput,
    EmailSent,
)


@workflow.defn
class SendOneEmail:
    @workflow.run
    async def run(self, email: EmailInput) -> EmailSent:
        return await workflow.execute_activity(
            SEND_EMAIL,
            email,
            result_type=EmailSent,
            start_to_close_timeout=EMAIL_START_TO_CLOSE,
            retry_policy=EMAIL_RETRY_POLICY,
        )


async def test_a_workflow_sends_through_the_activity(time_env, tmp_path):
    from activities.email_activities import EmailActivities
    from core.config import Settings

    settings = Settings(SENDGRID_API_KEY=None, OUTBOX_DIR=tmp_path / "outbox")
    acts = EmailActivities(settings)
    email = EmailInput(
        case_id="refund-req_wf",
        template="denial",
        to="kim@example.com",
        locale="ko",
        context={
            "clause_id": "window-30d",
            "clause_text": "Refunds are available within 30 days of purchase.",
            "alternatives": [{"id": "support", "text": "Priority support"}],
            "note": "",
        },
        step="decision",
    )
    queue = f"email-{tmp_path.name}"
    async with Worker(time_env.client, task_queue=queue, workflows=[SendOneEmail],
                      activities=[acts.send_email, acts.notify_ops]):
        sent = await time_env.client.execute_workflow(
            SendOneEmail.run, email, id=f"email-wf-{tmp_path.name}", task_queue=queue
        )

    assert sent.backend == "outbox"
    assert sent.subject == "환불 요청 검토 결과 안내 (접수 번호 refund-req_wf)"
    assert (settings.OUTBOX_DIR / "refund-req_wf--decision.json").exists()
