"""Loading policy files: the default loads, and every kind of mistake is reported with
the file, the field and the problem. Plus the Policy API other packages rely on."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml
from temporalio.contrib.pydantic import pydantic_data_converter

from policies.facts import Alternative
from policies.loader import DEFAULT_POLICY, PolicyError, load_policy
from policies.model import Policy


def default_data() -> dict[str, Any]:
    return yaml.safe_load(DEFAULT_POLICY.read_text(encoding="utf-8"))


def write(tmp_path: Path, data: Any, name: str = "policy.yaml") -> Path:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    return path


def error_for(tmp_path: Path, data: Any) -> PolicyError:
    path = write(tmp_path, data)
    with pytest.raises(PolicyError) as info:
        load_policy(path)
    assert str(path) in str(info.value)
    return info.value


def test_default_policy_loads() -> None:
    policy = load_policy()
    assert policy.version == "2026-11-23"
    assert set(policy.currencies) >= {"usd", "eur", "gbp", "jpy", "krw", "kwd"}
    assert policy.sla.acknowledge == timedelta(seconds=30)
    assert policy.sla.info_reminder == timedelta(days=3)
    assert policy.sla.info_timeout == timedelta(days=10)
    assert policy.sla.agent_decision == timedelta(hours=24)
    assert policy.sla.follow_up_delay == timedelta(days=3)
    assert policy.sla.feedback_wait == timedelta(days=7)
    assert policy.sla.refund_settle_poll == timedelta(hours=1)


def test_policy_api() -> None:
    policy = load_policy()
    clause = policy.clause("money-back-guarantee")
    assert (clause.id, clause.title) == ("money-back-guarantee",
                                         "14-day money-back guarantee for new customers")
    assert "14 days" in clause.text
    assert policy.has_clause("misuse") and not policy.has_clause("nope")
    with pytest.raises(KeyError):
        policy.clause("nope")
    assert all(isinstance(a, Alternative) for a in policy.alternatives)
    assert {a.id for a in policy.alternatives} == {"product_support", "discounted_upgrade",
                                                  "plan_change"}
    assert policy.approvers_required(99999, "usd") == 1
    assert policy.approvers_required(100000, "usd") == 2
    assert policy.approvers_required(149999, "JPY") == 1
    assert policy.approvers_required(150000, "jpy") == 2
    assert policy.approvers_required(1, "chf") == 2  # no threshold: be careful


def test_policy_survives_the_pydantic_data_converter() -> None:
    """The policy is an activity's result: it must round-trip through Temporal."""
    policy = load_policy()
    payloads = pydantic_data_converter.payload_converter.to_payloads([policy])
    [back] = pydantic_data_converter.payload_converter.from_payloads(payloads, [Policy])
    assert back == policy
    assert back.sla.acknowledge == timedelta(seconds=30)


def test_durations_accept_iso_and_short_forms(tmp_path: Path) -> None:
    data = default_data()
    data["sla"]["acknowledge"] = "PT45S"
    data["sla"]["agent_decision"] = "90m"
    data["sla"]["feedback_wait"] = 3600
    policy = load_policy(write(tmp_path, data))
    assert policy.sla.acknowledge == timedelta(seconds=45)
    assert policy.sla.agent_decision == timedelta(minutes=90)
    assert policy.sla.feedback_wait == timedelta(hours=1)


def test_unknown_top_level_key(tmp_path: Path) -> None:
    data = default_data()
    data["versoin"] = "x"
    err = error_for(tmp_path, data)
    assert "versoin: unknown key 'versoin'" in str(err)


def test_unknown_nested_key(tmp_path: Path) -> None:
    data = default_data()
    data["reasons"]["unused"]["window"]["dayz"] = 3
    err = error_for(tmp_path, data)
    assert "reasons.unused.window.dayz: unknown key 'dayz'" in str(err)


def test_unknown_key_in_an_alternative(tmp_path: Path) -> None:
    data = default_data()
    data["alternatives"][0]["price"] = 10
    assert "alternatives.0.price: unknown key" in str(error_for(tmp_path, data))


@pytest.mark.parametrize(
    ("path", "field"),
    [
        (("reasons", "unused", "clause"), "reasons.unused.clause"),
        (("reasons", "change_of_mind", "window", "late_clause"),
         "reasons.change_of_mind.window.late_clause"),
        (("reasons", "technical_issue", "amount", "clause"),
         "reasons.technical_issue.amount.clause"),
        (("documents", "bank_statement", "clause"), "documents.bank_statement.clause"),
        (("exclusions", "disputed"), "exclusions.disputed"),
        (("review", "risk"), "review.risk"),
        (("approval", "clause"), "approval.clause"),
    ],
)
def test_cited_clause_must_be_defined(tmp_path: Path, path: tuple[str, ...],
                                      field: str) -> None:
    data = default_data()
    node = data
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = "no-such-clause"
    err = error_for(tmp_path, data)
    assert f"{field}: clause 'no-such-clause' is cited but not defined" in str(err)


def test_negative_sla_duration(tmp_path: Path) -> None:
    data = default_data()
    data["sla"]["info_timeout"] = "-3d"
    err = error_for(tmp_path, data)
    assert "sla.info_timeout: duration must be positive, got -259200 seconds" in str(err)


def test_negative_window(tmp_path: Path) -> None:
    data = default_data()
    data["reasons"]["unused"]["window"]["days"] = -1
    err = error_for(tmp_path, data)
    assert "reasons.unused.window.days: Input should be greater than or equal to 0" in str(err)


def test_reminder_after_timeout(tmp_path: Path) -> None:
    data = default_data()
    data["sla"]["info_reminder"] = "11d"
    assert "sla: info_reminder must be shorter than info_timeout" in str(
        error_for(tmp_path, data))


def test_threshold_missing_for_accepted_currency(tmp_path: Path) -> None:
    data = default_data()
    del data["approval"]["two_approver_threshold"]["krw"]
    data["currencies"].append("sek")
    err = error_for(tmp_path, data)
    text = str(err)
    assert ("approval.two_approver_threshold: no amount for currency 'krw', which the "
            "policy accepts") in text
    assert "approval.auto_approve_limit: no amount for currency 'sek'" in text
    assert len(err.problems) == 3  # krw two-approver, sek both


def test_auto_limit_must_be_below_two_approver_threshold(tmp_path: Path) -> None:
    data = default_data()
    data["approval"]["auto_approve_limit"]["usd"] = 100000
    assert "approval.auto_approve_limit.usd: 100000 must be below" in str(
        error_for(tmp_path, data))


def test_negative_threshold(tmp_path: Path) -> None:
    data = default_data()
    data["approval"]["auto_approve_limit"]["gbp"] = -5
    assert "approval.auto_approve_limit: gbp: amount must not be negative" in str(
        error_for(tmp_path, data))


def test_undefined_document_kind(tmp_path: Path) -> None:
    data = default_data()
    data["reasons"]["other"]["documents"] = ["passport"]
    assert "reasons.other.documents.0: document kind 'passport' is not defined" in str(
        error_for(tmp_path, data))


def test_duplicate_clause_id(tmp_path: Path) -> None:
    data = default_data()
    data["clauses"].append(dict(data["clauses"][0]))
    assert "is defined twice" in str(error_for(tmp_path, data))


def test_missing_required_field(tmp_path: Path) -> None:
    data = default_data()
    del data["sla"]["feedback_wait"]
    assert "sla.feedback_wait: required field is missing" in str(error_for(tmp_path, data))


def test_unknown_reason(tmp_path: Path) -> None:
    data = default_data()
    data["reasons"]["bored"] = data["reasons"]["unused"]
    assert "reasons.bored" in str(error_for(tmp_path, data))


def test_unreadable_and_malformed_files(tmp_path: Path) -> None:
    missing = tmp_path / "missing.yaml"
    with pytest.raises(PolicyError, match=r"missing\.yaml: cannot read the file"):
        load_policy(missing)
    bad = tmp_path / "bad.yaml"
    bad.write_text("version: [unclosed\n", encoding="utf-8")
    with pytest.raises(PolicyError, match=r"bad\.yaml: not valid YAML"):
        load_policy(bad)
    with pytest.raises(PolicyError, match="must hold a mapping"):
        load_policy(write(tmp_path, ["a", "list"]))


def test_a_key_given_twice_is_an_error_not_a_silent_override(tmp_path: Path) -> None:
    text = DEFAULT_POLICY.read_text().replace(
        "  acknowledge: 30s", "  acknowledge: 30s\n  acknowledge: 2h")
    path = tmp_path / "twice.yaml"
    path.write_text(text)
    with pytest.raises(PolicyError) as err:
        load_policy(path)
    assert str(path) in str(err.value) and "'acknowledge' is given twice" in str(err.value)


def test_a_policy_missing_a_locales_wording_is_refused() -> None:
    """Every customer-facing text in every locale the policy lists."""
    from policies.loader import parse_policy
    text = DEFAULT_POLICY.read_text("utf-8")
    ko_question = "      ko: 이 결제의 영수증이나 청구서(PDF 또는 화면 캡처)를 보내 주시겠어요?\n"
    assert ko_question in text
    with pytest.raises(PolicyError, match=r"documents.proof_of_purchase.translations: no ko "
                                          r"wording \(the policy lists locale ko\)"):
        parse_policy(text.replace(ko_question, ""))
    with pytest.raises(PolicyError, match=r"root_causes\.duplicate_charge: no ja wording"):
        parse_policy(text.replace("    ja: 同じお支払いが", "    xja: 同じ").replace(
            "    xja:", "    # "))


def test_the_previous_default_policy_keeps_its_hash() -> None:
    """Cases pinned 2026-11-01 by content hash still find it (recorded histories too)."""
    from policies.library import fingerprint
    old = load_policy(DEFAULT_POLICY.with_name("default-2026-11-01.yaml"))
    assert fingerprint(old) == \
        "452d727d6fa1cab0590bae7bf8196686aede7bf488ee2150a2aa7efea5c745d8"
