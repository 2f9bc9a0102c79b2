"""The policy versions a process holds, by content hash.

A case pins its policy as a small `PolicyRef` (version + SHA-256 of the policy's canonical
JSON) instead of carrying the whole policy in its history: every replay, query and worker
restart reads that history for as long as the case lives. Workers hold the versions: the
`pin_policy` activity registers the policy it read, and a worker also knows every policy
file beside the one in force (`REFUND_POLICY_FILE`'s folder), so keep old versions' files
there while cases pinned to them are open. The content hash makes the look-up
deterministic: a ref resolves to the same policy on every worker, or to none (then the
workflow task fails with a message saying which file is missing, and is retried).

No settings import: the workflow sandbox passes this module through."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

from core.models import Strict
from policies.loader import PolicyError, load_policy
from policies.model import Policy

_by_hash: dict[str, Policy] = {}
_folders: list[Path] = []


class PolicyRef(Strict):
    """What a case pins: the policy's version and the hash of its content."""

    version: str
    sha256: str


class UnknownPolicy(RuntimeError):
    """No policy with this hash here: its file is not beside the policy in force."""


# Sections added to the policy model later: absent, they are left out of the hash, so a
# policy written before them keeps the hash the cases pinned to it hold.
_LATER_SECTIONS = ("replies",)


# Settings added to a section later: absent (None), they are left out of the hash too.
_LATER_SETTINGS = {"replies": ("reopen_within_days",)}


def fingerprint(policy: Policy) -> str:
    absent: dict[str, Any] = {name: True for name in _LATER_SECTIONS
                              if getattr(policy, name) is None}
    for section, names in _LATER_SETTINGS.items():
        held = getattr(policy, section)
        unset = {n: True for n in names if held is not None and getattr(held, n) is None}
        if unset and section not in absent:
            absent[section] = unset
    return hashlib.sha256(policy.model_dump_json(exclude=absent).encode()).hexdigest()


def register(policy: Policy) -> PolicyRef:
    digest = fingerprint(policy)
    _by_hash.setdefault(digest, policy)
    return PolicyRef(version=policy.version, sha256=digest)


def hold_folder(folder: Path) -> None:
    """Know every policy file in `folder` (the worker calls this at start)."""
    if folder not in _folders:
        _folders.append(folder)
    _scan(folder)


def _scan(folder: Path) -> None:
    for path in sorted(folder.glob("*.yaml")):
        try:
            register(load_policy(path))
        except (PolicyError, OSError):
            continue  # not a policy (or a broken one): it pins nothing


def resolve(ref: PolicyRef) -> Policy:
    """The policy a case pinned; reads the held folders again once before giving up."""
    if ref.sha256 not in _by_hash:
        for folder in _folders:
            _scan(folder)
    try:
        return _by_hash[ref.sha256]
    except KeyError:
        raise UnknownPolicy(
            f"policy {ref.version} ({ref.sha256[:12]}) is not held by this worker: put its "
            f"file beside the policy in force ({', '.join(map(str, _folders)) or 'none'})"
        ) from None


def by_version(version: str) -> Policy | None:
    """A held policy of this version (the console's look-up), if any."""
    return next((p for p in _by_hash.values() if p.version == version), None)
