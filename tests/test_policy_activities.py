"""The policy activities as a worker runs them: the policy in force pinned by its ref, the
file parsed again only when its text changes, and a file that cannot serve refused with
the error Temporal retries or not."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment

from activities.policy_activities import POLICY_INVALID, POLICY_UNREADABLE, PolicyActivities
from core.config import Settings
from policies.library import resolve
from policies.loader import DEFAULT_POLICY


def _policy_file(path: Path, version: str) -> Path:
    data = yaml.safe_load(DEFAULT_POLICY.read_text(encoding="utf-8"))
    data["version"] = version
    path.write_text(yaml.safe_dump(data, allow_unicode=True), encoding="utf-8")
    return path


async def test_a_policy_file_is_pinned_once_and_again_when_it_changes(tmp_path: Path) -> None:
    path = _policy_file(tmp_path / "policy.yaml", "2099-01-01")
    acts = PolicyActivities(Settings(REFUND_POLICY_FILE=path))
    env = ActivityEnvironment()
    first = await env.run(acts.pin_policy)
    assert await env.run(acts.pin_policy) == first
    assert resolve(first).version == "2099-01-01"

    _policy_file(path, "2099-02-01")  # fixed in place: new cases get the new policy
    second = await env.run(acts.pin_policy)
    assert second.version == "2099-02-01" and second.sha256 != first.sha256
    assert resolve(second).version == "2099-02-01"
    assert resolve(first).version == "2099-01-01"  # cases pinned to the first still resolve


async def test_a_missing_file_is_retried_and_a_broken_one_is_not(tmp_path: Path) -> None:
    path = tmp_path / "policy.yaml"
    acts = PolicyActivities(Settings(REFUND_POLICY_FILE=path))
    with pytest.raises(ApplicationError) as missing:
        await ActivityEnvironment().run(acts.pin_policy)
    assert missing.value.type == POLICY_UNREADABLE and not missing.value.non_retryable

    path.write_text("version: [unclosed\n", encoding="utf-8")
    with pytest.raises(ApplicationError) as broken:
        await ActivityEnvironment().run(acts.pin_policy)
    assert broken.value.type == POLICY_INVALID and broken.value.non_retryable
    assert "not valid YAML" in str(broken.value)
