"""What in a customer's words and files answers a document question (the policy's
`replies.answers`): a pattern in the text, a file of any name whose content type the
rule lists, a statement of enough words. A file named for the kind is the evaluator's
own rule (`DocumentRequirement.satisfied_by`); this adds what a person would accept.

Pure (no I/O): the workflow calls it on the replies it kept."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from policies.model import AnswerRule, Policy

# Full-width digits and signs as Japanese and Korean keyboards type them ("４４１１").
FULL_WIDTH = str.maketrans("０１２３４５６７８９＃：／＝", "0123456789#:/=")
# A file sent without its content type (the API, the CLI, the request's documents):
# the type its extension stands for, for the kinds of file evidence usually is.
_BY_EXTENSION = {
    "png": "image/png", "jpg": "image/jpeg", "jpeg": "image/jpeg", "gif": "image/gif",
    "webp": "image/webp", "heic": "image/heic", "heif": "image/heif", "bmp": "image/bmp",
    "tif": "image/tiff", "tiff": "image/tiff", "pdf": "application/pdf",
    "txt": "text/plain", "log": "text/plain", "eml": "message/rfc822",
}
_WORD = re.compile(r"\w+")


@dataclass
class Said:
    """Something the customer sent: its text and its files (name -> content type, None
    when unknown)."""

    text: str = ""
    files: dict[str, str | None] = field(default_factory=dict)


def content_type(name: str, claimed: str | None) -> str | None:
    """The claimed type, else the one the name's extension stands for."""
    if claimed and claimed != "application/octet-stream":
        return claimed.lower()
    ext = name.rsplit(".", 1)[-1].lower() if "." in name else ""
    return _BY_EXTENSION.get(ext, claimed)


def _type_matches(wanted: str, actual: str) -> bool:
    if wanted.endswith("/*"):
        return actual.split("/", 1)[0] == wanted[:-2]
    return actual == wanted


def answer_in(rule: AnswerRule, said: Said) -> str | None:
    """How `said` answers the rule (for the timeline), or None."""
    text = said.text.translate(FULL_WIDTH)
    for pattern in rule.patterns:
        m = re.search(pattern, text)
        if m:
            return f"the reply says “{m.group(0).strip()[:80]}”"
    for name, claimed in said.files.items():
        kind = content_type(name, claimed)
        if kind and any(_type_matches(t, kind) for t in rule.attachment_types):
            return f"the file {name} ({kind})"
    if rule.statement_min_words and len(_WORD.findall(text)) >= rule.statement_min_words:
        return f"a written statement of {len(_WORD.findall(text))} words"
    return None


def answered(policy: Policy, kinds: list[str], said: list[Said]) -> dict[str, str]:
    """The kinds among `kinds` that something the customer sent answers, with how."""
    rules = policy.reply_rules.answers
    found: dict[str, str] = {}
    for kind in kinds:
        rule = rules.get(kind)
        if rule is None:
            continue
        for item in said:
            how = answer_in(rule, item)
            if how is not None:
                found[kind] = how
                break
    return found
