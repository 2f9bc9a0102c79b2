"""The refund policy as data: clauses, per-reason rules, exclusions, review triggers,
approval routing, alternatives and SLAs.

Pure (no I/O, no yaml): the workflow sandbox imports this module and the policy travels
through the pydantic data converter (it is an activity's result). Every sub-model
refuses unknown keys so that a typo in a policy file fails loudly instead of being
ignored, and cross-references (clause ids, currencies) are checked when a Policy is
built, wherever it is built.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import date, timedelta
from typing import Annotated, Any, ClassVar, Literal

from pydantic import (
    BeforeValidator,
    Field,
    SerializerFunctionWrapHandler,
    field_validator,
    model_serializer,
    model_validator,
)

from core.models import Locale, RefundReason, Strict  # unknown keys are an error in every part
from core.money import normalize_currency
from policies.facts import Alternative, RiskLevel

_DURATION = re.compile(r"^\s*(-?\d+(?:\.\d+)?)\s*(s|m|h|d|w)\s*$")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def _parse_duration(value: object) -> object:
    """Accept the short forms people write in policy files ("30s", "3d", "24h", "1w")
    besides what pydantic already reads (ISO 8601 "PT30S", seconds as a number), so the
    converter's own ISO output reads back too."""
    if isinstance(value, str) and (m := _DURATION.match(value)):
        return timedelta(seconds=float(m.group(1)) * _UNIT_SECONDS[m.group(2)])
    return value


Duration = Annotated[timedelta, BeforeValidator(_parse_duration)]


class _AddedLater(Strict):
    """Fields added after policies were first pinned are left out of the dump while they
    hold their default: a policy file written before them keeps its content hash
    (policies.library.fingerprint), so the cases pinned to it still find it."""

    _added_later: ClassVar[tuple[str, ...]] = ()

    @model_serializer(mode="wrap")
    def _omit_unset_additions(self, handler: SerializerFunctionWrapHandler) -> Any:
        data = handler(self)
        if isinstance(data, dict):
            for name in self._added_later:
                default = type(self).model_fields[name].get_default(call_default_factory=True)
                if name in data and getattr(self, name) == default:
                    del data[name]
        return data


class ClauseWording(Strict):
    """A clause in another language: its title and the text customers read."""

    title: str = Field(min_length=1)
    text: str = Field(min_length=1)


class Clause(_AddedLater):
    """One published rule. `title` and `text` are the English wording customers read in
    emails; `translations` the other locales' (every locale the policy lists). A denial
    under the clause offers `alternatives` (ids; absent: every alternative of the policy)."""

    _added_later = ("translations", "alternatives")

    id: str = Field(pattern=r"^[a-z0-9][a-z0-9.-]*$", max_length=60)
    title: str = Field(min_length=1)
    text: str = Field(min_length=1)
    translations: dict[Locale, ClauseWording] = Field(default_factory=dict)
    alternatives: list[str] | None = None

    def title_in(self, locale: str) -> str:
        wording = self.translations.get(locale)  # type: ignore[call-overload]  # a Locale or not
        return wording.title if wording else self.title

    def text_in(self, locale: str) -> str:
        wording = self.translations.get(locale)  # type: ignore[call-overload]  # a Locale or not
        return wording.text if wording else self.text


class PolicyAlternative(Alternative, _AddedLater):
    """What we offer instead of a refund (product support, a discounted upgrade, a plan
    change). A strict subclass of the decision's Alternative, so it fits there as is;
    `text` is English, `translations` the other locales'."""

    _added_later = ("translations",)

    id: str = Field(pattern=r"^[a-z0-9][a-z0-9_-]*$")
    text: str = Field(min_length=1)
    translations: dict[Locale, str] = Field(default_factory=dict)

    def text_in(self, locale: str) -> str:
        return self.translations.get(locale) or self.text  # type: ignore[call-overload]


class Window(Strict):
    """How long after the charge a request may be made."""

    days: int = Field(ge=0)
    counted_from: Literal["purchase", "period_start"] = Field(
        "purchase",
        description="period_start: the current billing period (the renewal) of a "
        "subscription; falls back to the purchase date when the charge has no period.",
    )
    clause: str
    late_clause: str | None = Field(
        None, description="Exclusion cited (first) when the request is late."
    )


class AmountRule(Strict):
    """How much to refund. Prorations are computed on the original charge, less what
    was already refunded, and rounded in the currency's minor unit."""

    basis: Literal["full", "unused_time", "unused_quota"]
    full_if_unused: bool = Field(
        False, description="Refund in full when the product was not used at all."
    )
    clause: str | None = None


class ReasonRule(Strict):
    """What the policy does for one request reason, in the order the evaluator checks."""

    clause: str = Field(description="The eligibility clause for this reason.")
    window: Window
    fast_track_when_confirmed: bool = Field(
        False, description="Billing errors our records confirm: full refund at once."
    )
    new_customer_days: int | None = Field(
        None, ge=0, description="Only customers this many days old at purchase qualify."
    )
    requires_unused: bool = Field(False, description="Only if the product was not used.")
    documents: list[str] = Field(default_factory=list, description="Document kinds needed.")
    agent_review: bool = Field(False, description="Always decided by an agent.")
    amount: AmountRule


class DocumentRequirement(_AddedLater):
    """A document kind. A supplied document satisfies it when its name, lowercased,
    holds the kind or one of `matches` as a word, plural allowed ("receipt" in
    "receipt-0042.pdf", "log" in "error_logs.txt", but not in "catalog.pdf")."""

    _added_later = ("translations",)

    clause: str
    question: str = Field(min_length=1, description="Asked when the document is missing.")
    matches: list[str] = Field(default_factory=list)
    translations: dict[Locale, str] = Field(
        default_factory=dict, description="The question in the policy's other locales.")

    def question_in(self, locale: str) -> str:
        return self.translations.get(locale) or self.question  # type: ignore[call-overload]

    def satisfied_by(self, kind: str, documents: list[str]) -> bool:
        keys = [kind.lower(), *(m.lower() for m in self.matches)]
        words = [re.compile(rf"(?<![a-z]){re.escape(k)}s?(?![a-z])") for k in keys]
        return any(w.search(d.lower()) for d in documents for w in words)


# Content types a reply's file may claim: `image/png`, or a whole family `image/*`.
_MEDIA_TYPE = re.compile(r"^[a-z0-9][a-z0-9.+-]*/(\*|[a-z0-9][a-z0-9.+-]*)$")


class AnswerRule(Strict):
    """What in a customer's words or files answers one document question, besides a file
    named for the kind: a pattern in the text (a ticket number), a file of any name whose
    content type is listed (a screenshot called `スクリーンショット.png` is `image/png`),
    or a written statement of at least `statement_min_words` words."""

    patterns: list[str] = Field(default_factory=list, description="Regular expressions "
                                "searched in the text (full-width digits read as digits).")
    attachment_types: list[str] = Field(default_factory=list,
                                        description="Content types; `image/*` for a family.")
    statement_min_words: int | None = Field(None, ge=1, le=500)

    @field_validator("patterns")
    @classmethod
    def _patterns(cls, v: list[str]) -> list[str]:
        for i, pattern in enumerate(v):
            try:
                re.compile(pattern)
            except re.error as e:
                raise ValueError(f"pattern {i} ({pattern!r}) is not a regular expression: "
                                 f"{e}") from None
        return v

    @field_validator("attachment_types")
    @classmethod
    def _types(cls, v: list[str]) -> list[str]:
        out = [t.strip().lower() for t in v]
        bad = [t for t in out if not _MEDIA_TYPE.match(t)]
        if bad:
            raise ValueError(f"not content types (type/subtype or type/*): {', '.join(bad)}")
        return out


DEFAULT_REOPEN_WITHIN_DAYS = 30


class ReplyRules(Strict):
    """How the customer's replies count: what answers each document question, and how
    many days after a case closed a reply reopens it (later, it opens a new case linked to
    the closed one). Absent: DEFAULT_REOPEN_WITHIN_DAYS (and the policy keeps its hash)."""

    answers: dict[str, AnswerRule] = Field(default_factory=dict,
                                           description="Document kind -> what answers it.")
    reopen_within_days: int | None = Field(None, ge=0, le=3650, strict=True)

    @property
    def reopen_window(self) -> timedelta:
        days = self.reopen_within_days
        return timedelta(days=DEFAULT_REOPEN_WITHIN_DAYS if days is None else days)


class Exclusions(Strict):
    """Requests never refunded under the policy (clause ids)."""

    already_refunded: str
    disputed: str
    terms_violation: str


class Review(Strict):
    """When a person must decide (clause ids), whatever the reason's rule says."""

    findings: str = Field(description="Request and records disagree (assessment findings).")
    fraud: str = Field(description="The customer reports the charge as fraudulent.")
    risk: str
    risk_levels: list[RiskLevel] = Field(default_factory=lambda: ["high"])  # type: ignore[arg-type]  # pydantic types the factory by the field's Literal
    repeat_refunds: str
    max_prior_refunds: int = Field(2, ge=0)
    unsupported_currency: str
    unlisted_reason: str


class ApprovalRouting(Strict):
    """Per-currency routing in minor units: up to `auto_approve_limit` the policy
    approves on its own; from `two_approver_threshold` two different agents must approve."""

    clause: str
    auto_approve_limit: dict[str, int]
    two_approver_threshold: dict[str, int]

    @field_validator("auto_approve_limit", "two_approver_threshold")
    @classmethod
    def _amounts(cls, v: dict[str, int]) -> dict[str, int]:
        for code, amount in v.items():
            if amount < 0:
                raise ValueError(f"{code}: amount must not be negative, got {amount}")
        return {normalize_currency(k): a for k, a in v.items()}


class Sla(Strict):
    """Service levels the workflow's timers use."""

    acknowledge: Duration
    info_reminder: Duration
    info_timeout: Duration
    agent_decision: Duration
    follow_up_delay: Duration
    feedback_wait: Duration
    refund_settle_poll: Duration = Field(
        description="How long to wait for a Stripe refund webhook before polling."
    )

    @field_validator("*")
    @classmethod
    def _positive(cls, v: timedelta) -> timedelta:
        if v <= timedelta(0):
            raise ValueError(f"duration must be positive, got {v.total_seconds():g} seconds")
        return v

    @model_validator(mode="after")
    def _order(self) -> Sla:
        if self.info_reminder >= self.info_timeout:
            raise ValueError("info_reminder must be shorter than info_timeout")
        return self


class Policy(_AddedLater):
    """A versioned refund policy. Cases pin `version`; decisions cite clause ids.

    `locales`: the languages customers are written to in; every customer-facing text
    (clauses, alternatives, questions, root causes) has a wording in each, or the policy is
    refused. `root_causes`: what a billing error's root-cause tag (e.g. duplicate_charge)
    means, per locale; the tag itself never reaches a customer."""

    _added_later = ("locales", "root_causes")

    version: str = Field(min_length=1, max_length=40)
    name: str = Field(min_length=1)
    effective: date | None = None
    currencies: list[str] = Field(min_length=1)
    rounding: Literal["half_up", "down", "up"] = "half_up"
    clauses: list[Clause] = Field(min_length=1)
    reasons: dict[RefundReason, ReasonRule]
    documents: dict[str, DocumentRequirement] = Field(default_factory=dict)
    exclusions: Exclusions
    review: Review
    approval: ApprovalRouting
    alternatives: list[PolicyAlternative] = Field(default_factory=list)
    sla: Sla
    locales: list[Locale] = Field(default_factory=lambda: ["en"])  # type: ignore[arg-type]  # pydantic types the factory by the field's Literal
    root_causes: dict[str, dict[Locale, str]] = Field(default_factory=dict)
    # Absent in policies written before it (their content hash stays what cases pinned).
    replies: ReplyRules | None = None

    @field_validator("currencies")
    @classmethod
    def _currencies(cls, v: list[str]) -> list[str]:
        return [normalize_currency(c) for c in v]

    @model_validator(mode="after")
    def _consistent(self) -> Policy:
        problems = list(self._problems())
        if problems:
            raise ValueError("; ".join(problems))
        return self

    def _problems(self) -> Iterator[str]:
        """Cross-field problems as 'field: what is wrong'."""
        seen: set[str] = set()
        for i, c in enumerate(self.clauses):
            if c.id in seen:
                yield f"clauses.{i}.id: clause id {c.id!r} is defined twice"
            seen.add(c.id)
        for field, clause_id in self.clause_refs():
            if clause_id not in seen:
                yield f"{field}: clause {clause_id!r} is cited but not defined in clauses"
        for name, rule in self.reasons.items():
            for i, kind in enumerate(rule.documents):
                if kind not in self.documents:
                    yield (f"reasons.{name}.documents.{i}: document kind {kind!r} is not "
                           "defined in documents")
        limits = self.approval
        for currency in self.currencies:
            for field in ("auto_approve_limit", "two_approver_threshold"):
                if currency not in getattr(limits, field):
                    yield (f"approval.{field}: no amount for currency {currency!r}, which "
                           "the policy accepts")
            auto = limits.auto_approve_limit.get(currency)
            two = limits.two_approver_threshold.get(currency)
            if auto is not None and two is not None and auto >= two:
                yield (f"approval.auto_approve_limit.{currency}: {auto} must be below "
                       f"two_approver_threshold.{currency} ({two})")
        for field in ("auto_approve_limit", "two_approver_threshold"):
            for currency in getattr(limits, field):
                if currency not in self.currencies:
                    yield f"approval.{field}.{currency}: currency is not in currencies"
        for kind in (self.replies.answers if self.replies else {}):
            if kind not in self.documents:
                yield (f"replies.answers.{kind}: document kind {kind!r} is not defined in "
                       "documents")
        ids = [a.id for a in self.alternatives]
        for a in self.alternatives:
            if ids.count(a.id) > 1:
                yield f"alternatives: id {a.id!r} is defined twice"
                break
        for i, c in enumerate(self.clauses):
            for alt in c.alternatives or []:
                if alt not in ids:
                    yield (f"clauses.{i}.alternatives: alternative {alt!r} is not defined in "
                           "alternatives")
        yield from self._missing_wording()

    def _missing_wording(self) -> Iterator[str]:
        """Every customer-facing text in every locale the policy lists."""
        if "en" not in self.locales:
            yield "locales: en is required (the wording of title, text and question)"
        others = [loc for loc in dict.fromkeys(self.locales) if loc != "en"]
        texts: list[tuple[str, dict[Locale, Any]]] = [
            *((f"clauses.{i}.translations", c.translations) for i, c in enumerate(self.clauses)),
            *((f"alternatives.{i}.translations", a.translations)
              for i, a in enumerate(self.alternatives)),
            *((f"documents.{kind}.translations", d.translations)
              for kind, d in self.documents.items())]
        for where, translations in texts:
            if "en" in translations:
                yield f"{where}.en: the English wording is the text itself, not a translation"
            for missing in (loc for loc in others if loc not in translations):
                yield f"{where}: no {missing} wording (the policy lists locale {missing})"
            for extra in (loc for loc in translations if loc not in self.locales):
                yield f"{where}.{extra}: locale {extra} is not in locales"
        for tag, wording in self.root_causes.items():
            for needed in self.locales:
                if not wording.get(needed, "").strip():
                    yield (f"root_causes.{tag}: no {needed} wording (the policy lists locale "
                           f"{needed})")

    def clause_refs(self) -> Iterator[tuple[str, str]]:
        """Every place the policy cites a clause: (field path, clause id)."""
        for name, rule in self.reasons.items():
            yield f"reasons.{name}.clause", rule.clause
            yield f"reasons.{name}.window.clause", rule.window.clause
            if rule.window.late_clause:
                yield f"reasons.{name}.window.late_clause", rule.window.late_clause
            if rule.amount.clause:
                yield f"reasons.{name}.amount.clause", rule.amount.clause
        for kind, doc in self.documents.items():
            yield f"documents.{kind}.clause", doc.clause
        for section in ("exclusions", "review"):
            model = getattr(self, section)
            for field, value in model:
                if isinstance(value, str) and field != "risk_levels":
                    yield f"{section}.{field}", value
        yield "approval.clause", self.approval.clause

    # --- the contract others use ---------------------------------------------------

    def clause(self, clause_id: str) -> Clause:
        for c in self.clauses:
            if c.id == clause_id:
                return c
        raise KeyError(clause_id)

    def has_clause(self, clause_id: str) -> bool:
        return any(c.id == clause_id for c in self.clauses)

    def alternatives_for(self, clause_id: str) -> list[PolicyAlternative]:
        """What a denial under the clause may offer: the clause's own list, or (a clause
        that names none, as in policies written before) every alternative."""
        wanted = self.clause(clause_id).alternatives if self.has_clause(clause_id) else None
        if wanted is None:
            return list(self.alternatives)
        return [a for a in self.alternatives if a.id in wanted]

    def question_in(self, question: str, locale: str) -> str:
        """A question the policy asks (its English wording), in the customer's locale; an
        agent's own question stays as the agent wrote it."""
        for doc in self.documents.values():
            if doc.question == question:
                return doc.question_in(locale)
        return question

    def root_cause_text(self, tag: str | None, locale: str) -> str:
        """What a root-cause tag means for the customer; "" when the policy has no
        wording for it (the tag itself is never shown)."""
        wording = self.root_causes.get(tag or "", {})
        return wording.get(locale) or wording.get("en") or ""  # type: ignore[call-overload]

    def accepts(self, currency: str) -> bool:
        return currency.lower() in self.currencies

    def auto_approve_limit(self, currency: str) -> int | None:
        return self.approval.auto_approve_limit.get(currency.lower())

    @property
    def reply_rules(self) -> ReplyRules:
        """The policy's reply rules; the defaults for a policy without the section."""
        return self.replies or ReplyRules()

    def approvers_required(self, amount: int, currency: str) -> int:
        """2 from the currency's two-approver threshold (and for a currency the policy
        has no threshold for: unknown means careful), else 1."""
        threshold = self.approval.two_approver_threshold.get(currency.lower())
        return 2 if threshold is None or amount >= threshold else 1
