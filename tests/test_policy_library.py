"""Cases pin their policy as version + content hash; workers hold the versions."""

from __future__ import annotations

from pathlib import Path

import pytest

from policies import library
from policies.loader import DEFAULT_POLICY, load_policy


def test_a_ref_names_content_not_just_a_version(tmp_path: Path) -> None:
    policy = load_policy()
    ref = library.register(policy)
    assert ref.version == policy.version and len(ref.sha256) == 64
    edited = policy.model_copy(update={"sla": policy.sla.model_copy(
        update={"info_timeout": policy.sla.info_timeout * 2})})
    assert library.register(edited).sha256 != ref.sha256  # same version, other content
    assert library.resolve(ref) == policy


def test_a_worker_finds_a_version_added_beside_the_policy_in_force(tmp_path: Path) -> None:
    text = DEFAULT_POLICY.read_text("utf-8").replace(
        f'version: "{load_policy().version}"', 'version: "2099-01-01-later"')
    library.hold_folder(tmp_path)
    (tmp_path / "later.yaml").write_text(text, "utf-8")  # after the worker started
    later = load_policy(tmp_path / "later.yaml")
    ref = library.PolicyRef(version=later.version, sha256=library.fingerprint(later))
    assert library.resolve(ref).version == "2099-01-01-later"


def test_an_unheld_policy_fails_with_what_to_do() -> None:
    ref = library.PolicyRef(version="1999-gone", sha256="0" * 64)
    with pytest.raises(library.UnknownPolicy, match="put its file beside the policy in force"):
        library.resolve(ref)
