"""Step 4: ask the customer what the policy (or an agent) needs, wait durably for the reply
with one reminder, and close politely at the timeout. SendGrid reporting the questions
undeliverable hands the case to an agent at once instead of waiting out the timeout."""

from __future__ import annotations

from datetime import timedelta
from typing import Literal

from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from core.contract import (
        MAX_REPLY_IDS_KEPT,
        UNDELIVERABLE_EMAIL_EVENTS,
        CaseStatus,
        CustomerReplySignal,
        EmailEventSignal,
        FeedbackSignal,
    )
    from policies.answers import Said, answered

    from . import patches
    from .follow_up import has_full_width, rating_in, record_feedback
    from .runtime import CaseRuntime, iso

# "agent": an agent acted while the customer was asked (patch agents-lifecycle).
AskOutcome = Literal["replied", "abandoned", "undeliverable", "agent"]

# What a case keeps of its replies (the signals themselves stay in the event history).
MAX_REPLY_CHARS = 4_000
MAX_REPLIES_KEPT = 20
MAX_DOCUMENTS = 100
MAX_NAME_CHARS = 200
MAX_EMAIL_EVENTS_KEPT = 500


async def ask(rt: CaseRuntime, questions: list[str], asked_by: str, *,
              resumed: bool = False) -> AskOutcome:
    """"replied": the case is re-evaluated; "undeliverable": an agent takes over.
    `resumed`: a continued run picks up the wait where the last run left it."""
    case, progress, sla = rt.case, rt.case.progress, rt.policy.sla
    if not resumed:
        progress.info_rounds += 1
        progress.info_undeliverable = False
        progress.info_reminded = False
        progress.info_reply_by = workflow.now() + sla.info_timeout
        case.questions = list(questions)
        progress.questions_asked += [q for q in questions if q not in progress.questions_asked]
        rt.set_status(CaseStatus.awaiting_info, f"{len(questions)} question(s) for the "
                      "customer", actor=asked_by)
        progress.replies_at_ask = progress.replies_received  # a quick reply must count
    rounds, reply_by = progress.info_rounds, progress.info_reply_by
    assert reply_by is not None
    # The policy's questions in the customer's locale; an agent's as the agent wrote them.
    context = {"questions": customer_questions(rt), "reply_by": iso(reply_by)}
    if not resumed:
        await rt.email("info_request", f"info_request_{rounds}", context)

    def replied() -> bool:
        return progress.replies_received > progress.replies_at_ask

    def agent_acted() -> bool:
        return rt.paths.every_wait and (progress.agent_decision is not None
                                        or progress.reevaluate)

    def answered_or_bounced() -> bool:
        return replied() or progress.info_undeliverable or agent_acted()

    async def reminded_wait() -> bool:
        left = max(reply_by - workflow.now(), timedelta(seconds=1))
        return await rt.wait("the customer's reply (reminded)", answered_or_bounced, left,
                             may_continue=True)

    if progress.info_reminded:  # a continued run, after the reminder
        answered = await reminded_wait()
    else:
        remind_in = sla.info_reminder if not resumed else max(
            reply_by - sla.info_timeout + sla.info_reminder - workflow.now(),
            timedelta(seconds=1))
        answered = await rt.wait("the customer's reply", answered_or_bounced, remind_in,
                                 reply_by, may_continue=True)
        if not answered:
            await rt.email("reminder", f"reminder_{rounds}", context)
            progress.info_reminded = True
            answered = await reminded_wait()
    if not answered:
        rt.set_status(CaseStatus.abandoned, f"no reply to our questions by {iso(reply_by)}")
        await rt.email("abandoned", "abandoned", {"questions": customer_questions(rt)})
        return "abandoned"
    if agent_acted():
        case.questions = []
        return "agent"
    if not replied():
        return "undeliverable"
    case.questions = []
    rt.set_status(CaseStatus.assessing, "the customer replied; deciding again")
    return "replied"


def customer_questions(rt: CaseRuntime) -> list[str]:
    locale = rt.case.request.locale
    return [rt.policy.question_in(q, locale) for q in rt.case.questions]


def on_reply(rt: CaseRuntime, sig: CustomerReplySignal) -> None:
    """A reply (inbound email, API or CLI): kept with its new documents, whatever the
    case's state; a rating in a reply to the follow-up email is feedback. What is kept is
    bounded (the latest replies, each capped), so no customer can outgrow the case."""
    case, progress = rt.case, rt.case.progress
    if sig.message_id is not None:  # a redelivered mail is taken once
        if sig.message_id in progress.reply_ids:
            rt.record("reply_again", "The same reply was delivered again; it was taken "
                      "once", actor="customer")
            return
        progress.reply_ids.append(sig.message_id)
        del progress.reply_ids[:-MAX_REPLY_IDS_KEPT]
    progress.replies_received += 1
    kept = sig
    if len(sig.text) > MAX_REPLY_CHARS:
        kept = sig.model_copy(update={"text": sig.text[:MAX_REPLY_CHARS]})
    case.replies.append(kept)
    if len(case.replies) > MAX_REPLIES_KEPT:
        del case.replies[0]
        progress.replies_omitted += 1
    room = max(0, MAX_DOCUMENTS - len(case.documents))
    new = [a[:MAX_NAME_CHARS] for a in dict.fromkeys(sig.attachments)
           if a[:MAX_NAME_CHARS] not in case.documents][:room]
    case.documents.extend(new)
    line = f"The customer replied by {sig.channel}"
    if new:
        line += f" with {', '.join(new)}"
    if len(sig.text) > MAX_REPLY_CHARS:
        line += (f" ({len(sig.text):,} characters; the first {MAX_REPLY_CHARS:,} are kept "
                 "in the case)")
    if case.status != CaseStatus.awaiting_info:
        line += f" (no question was open: the case is {case.status})"
    rt.record("customer_replied", line, actor="customer", attachments=new)
    rating = rating_in(sig.text)
    if (rating is None and has_full_width(sig.text) and case.status == CaseStatus.refunded
            and case.feedback is None and patches.has(patches.FULL_WIDTH_RATING)):
        rating = rating_in(sig.text, full_width=True)
    if (case.status == CaseStatus.refunded and case.feedback is None
            and rating is not None and patches.has(patches.FEEDBACK_BY_EMAIL)):
        # The follow-up email asks for a 1-5 rating by reply.
        record_feedback(rt, FeedbackSignal(rating=rating, comment=sig.text[:5_000]), "email")


def asked_before(rt: CaseRuntime, questions: list[str]) -> bool:
    """Every one of `questions` was emailed already and the customer has replied since:
    asking again would send the same question twice, so an agent reads the reply instead
    (cases started before asked again: patch replies-answers-count)."""
    progress = rt.case.progress
    return (bool(questions) and all(q in progress.questions_asked for q in questions)
            and progress.replies_received > 0 and patches.has(patches.REPLY_ANSWERS))


def last_reply_excerpt(rt: CaseRuntime, limit: int = 300) -> str:
    """The customer's latest reply as an agent first sees it: its text, its files."""
    if not rt.case.replies:
        return "(no reply kept)"
    reply = rt.case.replies[-1]
    text = " ".join(reply.text.split())
    shown = f"“{text[:limit]}{'…' if len(text) > limit else ''}”" if text else "(no text)"
    if reply.attachments:
        shown += " with " + ", ".join(reply.attachments[:5])
    return shown


def count_answers(rt: CaseRuntime) -> None:
    """Before the policy decides: the document questions the customer's words or files
    answer (the policy's `replies.answers`: "My support ticket number is 4411.", a
    screenshot of any name), recorded once each. Cases started before count file names
    only (patch replies-answers-count)."""
    case, policy = rt.case, rt.policy
    rule = policy.reasons.get(case.request.reason)
    if rule is None or not policy.reply_rules.answers:
        return
    open_kinds = [k for k in rule.documents if k not in case.requirements_answered
                  and not policy.documents[k].satisfied_by(k, case.documents)]
    if not open_kinds or not patches.has(patches.REPLY_ANSWERS):
        return
    said = [Said(case.request.message, {name: None for name in case.request.documents})]
    said += [Said(r.text, {name: r.attachment_types.get(name) for name in r.attachments})
             for r in case.replies]
    for kind, how in answered(policy, open_kinds, said).items():
        case.requirements_answered[kind] = how
        rt.record("requirement_answered", f"{kind} is answered: {how}", actor="customer",
                  requirement=kind)


def on_email_event(rt: CaseRuntime, sig: EmailEventSignal) -> None:
    """A SendGrid delivery event; a bounce of our open questions hands over to an agent."""
    case, progress = rt.case, rt.case.progress
    if sig.sg_event_id is not None:
        if sig.sg_event_id in progress.email_events_seen:
            return  # SendGrid delivers events at least once
        progress.email_events_seen.append(sig.sg_event_id)
        del progress.email_events_seen[:-MAX_EMAIL_EVENTS_KEPT]
    rt.record("email_event", f"Email {sig.template or ''} to {sig.email}: {sig.event}"
              f"{' (' + sig.reason + ')' if sig.reason else ''}", actor="sendgrid",
              event=sig.event, template=sig.template)
    if (sig.event in UNDELIVERABLE_EMAIL_EVENTS and sig.template in ("info_request", "reminder")
            and case.status == CaseStatus.awaiting_info
            and sig.email.lower() == case.request.customer_email.lower()
            and patches.has(patches.UNDELIVERABLE_INFO)):
        progress.info_undeliverable = True
