"""Every customer email, rendered in en, ja and ko for a case with a root cause, a clause
and alternatives, with the context the workflow builds from the policy: no English inside
a ja or ko email (only names, ids and amounts allowed explicitly), no internal codes, and
times in the customer's time zone."""

from __future__ import annotations

import html
import re
from typing import Any

import pytest

from activities.email_models import TEMPLATE_NAMES
from activities.email_render import render
from policies.loader import load_policy
from workflows.refund_case.follow_up import FEEDBACK_HINT

POLICY = load_policy()
CASE_ID = "refund-req_42"
EMAIL = "jane@example.com"
ACQUIRER_REFERENCE = "74638459302837465839201"
CUSTOMER_TEMPLATES = [t for t in TEMPLATE_NAMES if t != "ops_escalation"]
# Latin-script words a ja/ko email may hold: our name, a file type, the currency prefix
# of an amount ("US$19.00"); and the tokens (ids, addresses) below.
ALLOWED_WORDS = {"Refund", "Desk", "PDF", "US"}  # "US$19.00" is an amount in ko
ALLOWED_TOKENS = [CASE_ID, EMAIL, ACQUIRER_REFERENCE]
LATIN_WORD = re.compile(r"[A-Za-z]{2,}")


def workflow_context(locale: str) -> dict[str, Any]:
    """What the workflow sends: the policy's wording in the customer's locale."""
    clause = POLICY.clause("change-of-mind-late")
    docs = POLICY.documents
    return {
        "case_id": CASE_ID, "customer_email": EMAIL,
        "reason": "duplicate_charge", "next_update_by": "2025-03-04T18:28:00Z",
        "questions": [POLICY.question_in(docs[k].question, locale) for k in docs],
        "reply_by": "2025-03-10T18:28:00Z", "amount": 1900, "currency": "usd",
        "next_steps_by": "2025-03-04T18:28:00Z",
        "clause_id": clause.id, "clause_title": clause.title_in(locale),
        "clause_text": clause.text_in(locale), "note": "",
        "alternatives": [{"id": a.id, "text": a.text_in(locale)}
                         for a in POLICY.alternatives_for(clause.id)],
        "acquirer_reference": ACQUIRER_REFERENCE, "feedback_hint": FEEDBACK_HINT[locale],
        "root_cause": POLICY.root_cause_text("duplicate_charge", locale),
        "failure_reason": "expired_or_canceled_card", "refunded": 1900,
    }


def english_in(text: str) -> list[str]:
    """Latin-script words left once the allowed names, ids and amounts are taken out."""
    for token in ALLOWED_TOKENS:
        text = text.replace(token, " ")
    return [w for w in LATIN_WORD.findall(text) if w not in ALLOWED_WORDS]


def visible(page: str) -> str:
    """What a reader sees of an HTML email: text, not tags or attributes."""
    body = page.split("<body", 1)[1].split(">", 1)[1]
    return html.unescape(re.sub(r"<[^>]+>", " ", body))


def test_the_detector_finds_english_inside_a_korean_email() -> None:
    context = {**workflow_context("ko"), "clause_text": POLICY.clause(
        "change-of-mind-late").text}  # what ko emails carried before
    email = render("denial", "ko", context, "Asia/Seoul")
    assert "changed" in english_in(email.text)


@pytest.mark.parametrize("locale", ["ja", "ko"])
@pytest.mark.parametrize("template", CUSTOMER_TEMPLATES)
def test_no_english_inside_a_japanese_or_korean_email(template: str, locale: str) -> None:
    email = render(template, locale, workflow_context(locale))
    for part in (email.subject, email.text, visible(email.html)):
        assert english_in(part) == [], part


@pytest.mark.parametrize("locale", ["en", "ja", "ko"])
@pytest.mark.parametrize("template", CUSTOMER_TEMPLATES)
def test_no_internal_codes_in_any_email(template: str, locale: str) -> None:
    email = render(template, locale, workflow_context(locale))
    for part in (email.subject, email.text, visible(email.html)):
        for code in ("duplicate_charge", "change-of-mind-late", "expired_or_canceled_card",
                     "discounted_upgrade", "plan_change", "ch_"):
            assert code not in part, (code, part)


@pytest.mark.parametrize(("locale", "zone", "shown", "absent"), [
    ("ko", None, "2025년 3월 5일 3:28 대한민국 표준시", ["UTC", "AM", "PM"]),
    ("ja", None, "2025年3月5日 3:28 日本標準時", ["UTC"]),
    ("en", None, "March 4, 2025, 6:28\u202fPM UTC", []),
    ("en", "America/Los_Angeles", "March 4, 2025, 10:28\u202fAM Pacific Standard Time",
     ["UTC"]),
    ("ko", "Europe/Berlin", "2025년 3월 4일 19:28 중부유럽 표준시", ["UTC"]),
])
@pytest.mark.parametrize("template", ["acknowledgment", "approval", "billing_error_apology",
                                      "info_request", "reminder"])
def test_times_are_in_the_customers_zone(template: str, locale: str, zone: str | None,
                                         shown: str, absent: list[str]) -> None:
    context = workflow_context(locale)
    if template in ("info_request", "reminder"):  # their date is the reply-by
        context["reply_by"] = context["next_steps_by"]
    email = render(template, locale, context, zone)
    for part in (email.text, visible(email.html)):
        assert shown in part
        for word in absent:
            assert word not in LATIN_WORD.findall(part)


def test_a_request_refuses_an_unknown_time_zone() -> None:
    from pydantic import ValidationError

    from core.models import RefundRequest
    base = {"request_id": "r1", "customer_email": EMAIL, "charge_id": "ch_1",
            "reason": "unused"}
    assert RefundRequest(**base, timezone="Asia/Seoul").timezone == "Asia/Seoul"
    for bad in ("Mars/Olympus", "../etc/passwd", "/usr/share/zoneinfo/UTC", ""):
        with pytest.raises(ValidationError, match="time zone"):
            RefundRequest(**base, timezone=bad)


def test_ops_emails_link_to_the_case() -> None:
    from activities.email_activities import case_links
    from core.config import Settings
    settings = Settings(TEMPORAL_UI_URL="https://temporal.example.com/",
                        API_PUBLIC_URL="https://refunds.example.com")
    links = case_links(CASE_ID, settings)
    assert links == {
        "temporal_url": "https://temporal.example.com/namespaces/default/workflows/"
                        "refund-req_42",
        "console_url": "https://refunds.example.com/console/cases/refund-req_42",
        "api_url": "https://refunds.example.com/cases/refund-req_42"}
    email = render("ops_escalation", "en", {"case_id": CASE_ID, "customer_email": EMAIL,
                                            "kind": "dispute_opened", "message": "m", **links})
    for url in links.values():
        assert url in email.text and f'href="{url}"' in email.html
