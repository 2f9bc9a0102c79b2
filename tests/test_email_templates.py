"""Every template renders in every locale from a complete context, carries the facts the
customer needs, formats money and dates for the locale, and escapes untrusted text."""

from __future__ import annotations

from typing import Any

import pytest

from activities.email_models import TEMPLATE_NAMES
from activities.email_render import (
    LOCALES,
    REQUIRED_CONTEXT,
    RenderError,
    format_instant,
    format_money,
    render,
)

XSS = "<script>alert('x')</script>"
NNBSP = "\u202f"  # CLDR puts a narrow no-break space before AM/PM
ESCAPED = "&lt;script&gt;"


def sample_context(**overrides: Any) -> dict[str, Any]:
    """Every key any template needs, with realistic values."""
    context: dict[str, Any] = {
        "case_id": "refund-req_42",
        "customer_email": "jane@example.com",
        "reason": "technical_issue",
        "next_update_by": "2025-03-04T15:30:00Z",
        "questions": ["Which plan did you buy?", "When did the problem start?"],
        "reply_by": "2025-03-10T09:00:00+00:00",
        "amount": 12345,
        "refunded": 12345,
        "currency": "usd",
        "next_steps_by": "2025-03-06T12:00:00Z",
        "clause_id": "window-30d",
        "clause_text": "Refunds are available within 30 days of purchase.",
        "alternatives": [
            {"id": "support", "text": "A free session with our product specialists"},
            {"id": "downgrade", "text": "A switch to the Basic plan at 50% off"},
        ],
        "note": "Your purchase was 45 days ago.",
        "acquirer_reference": "74638459302837465839201",
        "feedback_hint": "",
        "root_cause": "A retry in our billing system charged your card twice.",
        "failure_reason": "expired_or_canceled_card",
        "kind": "ack_sla_breached",
        "message": "Acknowledgment sent after its deadline.",
    }
    context.update(overrides)
    return context


def test_template_names_match_the_renderer():
    assert set(TEMPLATE_NAMES) == set(REQUIRED_CONTEXT)
    assert len(TEMPLATE_NAMES) == 12  # with dispute_opened and nothing_left


@pytest.mark.parametrize("locale", LOCALES)
@pytest.mark.parametrize("template", TEMPLATE_NAMES)
def test_every_template_renders_in_every_locale(template, locale):
    email = render(template, locale, sample_context())

    assert email.subject and "\n" not in email.subject
    assert email.text.strip()
    assert email.html.startswith("<!doctype html>")
    assert f'<html lang="{locale}">' in email.html
    assert "refund-req_42" in email.subject + email.text
    assert "{{" not in email.text + email.html  # nothing left unrendered


@pytest.mark.parametrize("template", TEMPLATE_NAMES)
def test_only_the_required_keys_are_needed(template):
    context = {k: v for k, v in sample_context().items()
               if k in REQUIRED_CONTEXT[template] | {"case_id", "customer_email"}}
    for locale in LOCALES:
        render(template, locale, context)


@pytest.mark.parametrize("template", sorted(t for t in TEMPLATE_NAMES if REQUIRED_CONTEXT[t]))
def test_a_missing_context_key_is_reported_by_name(template):
    key = sorted(REQUIRED_CONTEXT[template])[0]
    context = sample_context()
    del context[key]
    with pytest.raises(RenderError, match=key):
        render(template, "en", context)


def test_unknown_template_or_locale_is_refused():
    with pytest.raises(RenderError, match="unknown email template"):
        render("nope", "en", sample_context())
    with pytest.raises(RenderError, match="unsupported locale"):
        render("approval", "fr", sample_context())


MONEY_IN_TEMPLATES = ["approval", "refund_completed", "billing_error_apology", "refund_failed"]


@pytest.mark.parametrize(
    ("locale", "amount", "currency", "expected"),
    [("en", 12345, "usd", "$123.45"), ("ja", 5000, "jpy", "￥5,000"),
     ("ko", 5000, "krw", "₩5,000"), ("en", 5000, "jpy", "¥5,000")],
)
@pytest.mark.parametrize("template", MONEY_IN_TEMPLATES)
def test_money_is_formatted_for_the_locale(template, locale, amount, currency, expected):
    email = render(template, locale, sample_context(amount=amount, currency=currency))
    assert expected in email.subject
    assert expected in email.text
    assert expected in email.html


def test_money_filter_handles_minor_units():
    assert format_money(12345, "usd", "en") == "$123.45"
    assert format_money(5000, "jpy", "ja") == "￥5,000"
    assert format_money(1500000, "krw", "ko") == "₩1,500,000"
    assert format_money(1234, "kwd", "en").endswith("1.234")  # three-decimal currency
    with pytest.raises(RenderError):
        format_money("123.45", "usd", "en")  # type: ignore[arg-type]


def test_dates_are_formatted_for_the_locale_in_the_customers_zone():
    instant = "2025-03-04T15:30:00Z"
    assert format_instant(instant, "en") == f"March 4, 2025, 3:30{NNBSP}PM UTC"
    # No zone given: the locale's (Tokyo, Seoul), named in the customer's language.
    assert format_instant(instant, "ja") == "2025年3月5日 0:30 日本標準時"
    assert format_instant(instant, "ko") == "2025년 3월 5일 0:30 대한민국 표준시"
    assert format_instant("2025-03-04T16:30:00+01:00", "en") == f"March 4, 2025, 3:30{NNBSP}PM UTC"
    assert format_instant(instant, "en", "America/New_York") == \
        f"March 4, 2025, 10:30{NNBSP}AM Eastern Standard Time"
    assert format_instant(instant, "ko", "UTC") == "2025년 3월 4일 15:30 협정 세계시"
    assert format_instant(instant, "ja", "Asia/Seoul") == "2025年3月5日 0:30 韓国標準時"
    with pytest.raises(RenderError):
        format_instant("next tuesday", "en")
    with pytest.raises(RenderError, match="time zone"):
        format_instant(instant, "en", "Mars/Olympus_Mons")


def test_acknowledgment_names_the_reason_and_the_deadline():
    email = render("acknowledgment", "en", sample_context())
    assert "a technical issue" in email.text
    assert f"March 4, 2025, 3:30{NNBSP}PM UTC" in email.text
    ja = render("acknowledgment", "ja", sample_context())
    assert "技術的な不具合" in ja.text and "2025年3月5日 0:30 日本標準時" in ja.text


@pytest.mark.parametrize("locale", LOCALES)
def test_approval_says_what_happens_next_and_by_when(locale):
    email = render("approval", locale, sample_context())
    expected_date = format_instant("2025-03-06T12:00:00Z", locale)
    assert expected_date in email.text
    assert expected_date in email.html


@pytest.mark.parametrize("locale", LOCALES)
def test_denial_quotes_the_clause_and_offers_alternatives(locale):
    email = render("denial", locale, sample_context())
    for part in (email.text, email.html):
        assert "window-30d" not in part  # the clause's id is ours, not the customer's
        assert "Refunds are available within 30 days of purchase." in part
        assert "A free session with our product specialists" in part
        assert "A switch to the Basic plan at 50% off" in part
        assert "Your purchase was 45 days ago." in part


def test_denial_without_alternatives_or_note_still_reads_well():
    email = render("denial", "en", sample_context(alternatives=[], note=""))
    assert "what we can offer instead" not in email.text
    assert "A note from our team" not in email.text
    assert "Refunds are available within 30 days of purchase." in email.text


@pytest.mark.parametrize("locale", LOCALES)
def test_refund_completed_gives_reference_and_asks_for_rating(locale):
    email = render("refund_completed", locale, sample_context())
    for part in (email.text, email.html):
        assert "74638459302837465839201" in part
        assert "1" in part and "5" in part
    without = render("refund_completed", locale, sample_context(acquirer_reference=""))
    assert "74638459302837465839201" not in without.text


def test_refund_completed_feedback_request_uses_the_hint_when_given():
    ask = "reply to this email with a number from 1 (poor) to 5 (excellent)"
    assert ask in render("refund_completed", "en", sample_context(feedback_hint="")).text
    hint = "Reply with a rating from 1 to 5 and a comment."
    email = render("refund_completed", "en", sample_context(feedback_hint=hint))
    assert hint in email.text and hint in email.html
    assert ask not in email.text  # one request, not two


@pytest.mark.parametrize("locale", LOCALES)
def test_billing_error_apology_names_the_root_cause(locale):
    email = render("billing_error_apology", locale, sample_context())
    assert "A retry in our billing system charged your card twice." in email.text
    assert "A retry in our billing system charged your card twice." in email.html
    apology = {"en": "We are sorry", "ja": "申し訳ございません", "ko": "사과드립니다"}[locale]
    assert apology in email.text


@pytest.mark.parametrize("template", ["info_request", "reminder", "abandoned"])
@pytest.mark.parametrize("locale", LOCALES)
def test_questions_are_listed(template, locale):
    email = render(template, locale, sample_context())
    for question in ("Which plan did you buy?", "When did the problem start?"):
        assert question in email.text
        assert f"<li>{question}</li>" in email.html


@pytest.mark.parametrize("locale", LOCALES)
def test_refund_failed_explains_the_reason(locale):
    email = render("refund_failed", locale, sample_context())
    label = {"en": "the card has expired or has been cancelled",
             "ja": "カードの有効期限切れ、または解約", "ko": "카드 유효기간 만료 또는 해지"}[locale]
    assert label in email.text
    other = render("refund_failed", locale, sample_context(failure_reason="some_new_code"))
    assert "some_new_code" not in other.text  # an unknown code reads as "no reason given"
    bare = render("refund_failed", locale, sample_context(failure_reason="failed"))
    assert "failed" not in bare.text  # a bare refund status reads as "no reason given"


@pytest.mark.parametrize("locale", LOCALES)
@pytest.mark.parametrize("template", TEMPLATE_NAMES)
def test_untrusted_text_is_escaped_in_html(template, locale):
    hostile = sample_context(
        reason=XSS, questions=[XSS], clause_text=XSS, note=XSS, feedback_hint=XSS,
        alternatives=[{"id": "x", "text": XSS}], root_cause=XSS, acquirer_reference=XSS,
        failure_reason=XSS, kind=XSS, message=XSS, case_id=XSS,  # request ids come from outside
    )
    email = render(template, locale, hostile)
    assert "<script>" not in email.html
    assert ESCAPED in email.html
    assert "&amp;lt;" not in email.html  # escaped once, not twice


def test_plain_text_keeps_customer_text_verbatim():
    email = render("info_request", "en", sample_context(questions=["Is A & B < C?"]))
    assert "Is A & B < C?" in email.text
    assert "Is A &amp; B &lt; C?" in email.html


def test_subject_is_one_line_even_with_newlines_in_values():
    email = render("ops_escalation", "en", sample_context(kind="sla\r\nBcc: x@evil.test"))
    assert "\n" not in email.subject and "\r" not in email.subject
