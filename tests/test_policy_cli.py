"""`policy check` and `policy simulate`, through `main(argv)` and once through
`python starter.py policy ...` as people run it."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from policies.cli import main
from policies.loader import DEFAULT_POLICY

ROOT = Path(__file__).resolve().parents[1]
NOW = "2026-11-20T12:00:00+00:00"


def case(**kw: Any) -> dict[str, Any]:
    base = dict(reason="change_of_mind", currency="usd", charge_amount=2900,
                purchased_at="2026-11-01T00:00:00+00:00",
                customer_since="2026-10-30T00:00:00+00:00", now=NOW)
    base.update(kw)
    return base


@pytest.fixture
def candidate(tmp_path: Path) -> Path:
    """The default policy with a 30-day money-back guarantee instead of 14 days."""
    data = yaml.safe_load(DEFAULT_POLICY.read_text(encoding="utf-8"))
    data["version"] = "2026-12-01"
    data["reasons"]["change_of_mind"]["window"]["days"] = 30
    path = tmp_path / "candidate.yaml"
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    return path


@pytest.fixture
def cases(tmp_path: Path) -> Path:
    rows = [
        case(),                                            # day 19: late now, fine after
        case(currency="jpy", charge_amount=3300),          # same, in yen
        case(purchased_at="2026-11-15T00:00:00+00:00"),    # day 5: approved by both
        case(reason="unused", product_used=False),         # unaffected
        case(disputed=True),                               # denied by both
    ]
    path = tmp_path / "cases.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n\n", encoding="utf-8")
    return path


def test_check_summarises_a_good_policy(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check", str(DEFAULT_POLICY)]) == 0
    out = capsys.readouterr().out
    assert "policy 2026-11-23: Subscription refund policy - OK" in out
    assert "22 clauses" in out
    assert "JPY: 30000 JPY / 150000 JPY" in out
    assert "KWD: 60.000 KWD / 300.000 KWD" in out
    assert "acknowledge 30s" in out and "info_timeout 10d" in out


def test_check_reports_a_bad_policy(tmp_path: Path,
                                    capsys: pytest.CaptureFixture[str]) -> None:
    data = yaml.safe_load(DEFAULT_POLICY.read_text(encoding="utf-8"))
    data["exclusions"]["disputed"] = "dispute-clause"
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(data), encoding="utf-8")
    assert main(["check", str(bad)]) == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    assert (f"error: {bad}: exclusions.disputed: clause 'dispute-clause' is cited but not "
            "defined") in captured.err


def test_simulate_compares_outcomes_and_totals(candidate: Path, cases: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["simulate", "--policy", str(candidate), "--baseline", str(DEFAULT_POLICY),
                 "--cases", str(cases)]) == 0
    out = capsys.readouterr().out
    assert "5 cases: baseline 2026-11-23 -> new 2026-12-01" in out
    table = [line.split() for line in out.splitlines()]
    lines = {row[0]: row[1:] for row in table if len(row) == 4 and row[1].isdigit()}
    assert lines["approve"] == ["2", "4", "+2"]
    assert lines["deny"] == ["3", "1", "-2"]
    assert "USD: 58.00 USD -> 87.00 USD (+29.00 USD)" in out
    assert "JPY: 0 JPY -> 3300 JPY (+3300 JPY)" in out
    assert "2 cases change (40.0%)" in out
    assert "deny -> approve: 2" in out
    assert ("line 1: change_of_mind 29.00 USD: deny 0.00 USD "
            "[change-of-mind-late, money-back-guarantee] -> approve 29.00 USD "
            "[money-back-guarantee]") in out


def test_simulate_baseline_defaults_to_the_default_policy(
        candidate: Path, cases: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["simulate", "--policy", str(candidate), "--cases", str(cases),
                 "--sample", "0"]) == 0
    out = capsys.readouterr().out
    assert "baseline 2026-11-23 -> new 2026-12-01" in out
    assert "sample of changed cases" not in out


def test_simulate_same_policy_changes_nothing(cases: Path,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["simulate", "--policy", str(DEFAULT_POLICY), "--cases", str(cases)]) == 0
    assert "0 cases change (0.0%)" in capsys.readouterr().out


def test_simulate_names_a_bad_case_line(tmp_path: Path, candidate: Path,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "cases.jsonl"
    path.write_text(json.dumps(case()) + "\n" + json.dumps(case(charge_amount=-1)) + "\n",
                    encoding="utf-8")
    assert main(["simulate", "--policy", str(candidate), "--cases", str(path)]) == 1
    err = capsys.readouterr().err
    assert f"{path}: line 2: not a valid case" in err and "charge_amount" in err


@pytest.mark.parametrize(("content", "problem"), [
    (None, "cannot read the cases file"),
    ("[1, 2]\n", "line 1: not a valid case: a case is a JSON object"),
    ("{not json\n", "line 1: not a valid case"),
])
def test_simulate_refuses_unusable_case_files_without_a_traceback(
        tmp_path: Path, candidate: Path, capsys: pytest.CaptureFixture[str],
        content: str | None, problem: str) -> None:
    path = tmp_path / "cases.jsonl"
    if content is not None:
        path.write_text(content, encoding="utf-8")
    assert main(["simulate", "--policy", str(candidate), "--cases", str(path)]) == 1
    assert f"{path}: {problem}" in capsys.readouterr().err


def test_starter_runs_policy_check(tmp_path: Path) -> None:
    ok = subprocess.run([sys.executable, "starter.py", "policy", "check",
                         "policies/default.yaml"], cwd=ROOT, capture_output=True, text=True)
    assert ok.returncode == 0, ok.stderr
    assert "2026-11-23" in ok.stdout
    bad = tmp_path / "bad.yaml"
    bad.write_text("version: '1'\nclause: []\n", encoding="utf-8")
    failed = subprocess.run([sys.executable, "starter.py", "policy", "check", str(bad)],
                            cwd=ROOT, capture_output=True, text=True)
    assert failed.returncode == 1
    assert f"{bad}: clause: unknown key 'clause'" in failed.stderr
    assert f"{bad}: sla: required field is missing" in failed.stderr
