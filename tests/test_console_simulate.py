"""Policy simulation on real history: the cases of an end-to-end run (real worker, dev
server, localstripe), read back from Temporal, give under the policy they pinned the same
decisions they actually got; a looser policy shows what would change. Through the
function, `python starter.py policy simulate --from-cases` and the console's page."""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest
import pytest_asyncio
import yaml
from temporalio.testing import WorkflowEnvironment

from core.case_history import cases_for_simulation
from policies.loader import DEFAULT_POLICY, load_policy
from policies.simulate import simulate
from stack.stripe_seed import seed_charge
from tests.console_support import STRIPE_KEY, ConsoleDesk, csrf_of, serve_desk, signed_in

ROOT = Path(__file__).parent.parent


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def desk(dev_env: WorkflowEnvironment, localstripe_url: str,
               tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[ConsoleDesk]:
    async for served in serve_desk(dev_env.client, localstripe_url,
                                   tmp_path_factory.mktemp("simulate")):
        yield served


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def decided(desk: ConsoleDesk) -> dict[str, str]:
    """Cases the policy decided every way it decides here; outcome expected per case."""
    first = desk.seed(1_900)
    duplicate = seed_charge(desk.stripe_url, STRIPE_KEY, email=first.email, amount=1_900,
                            currency="usd", customer_id=first.customer_id)
    opened = {
        "approve": await desk.open_case(desk.seed(2_000), reason="change_of_mind"),
        "agent_review": await desk.open_case(desk.seed(50_000), reason="change_of_mind"),
        "need_info": await desk.open_case(desk.seed(4_900), reason="technical_issue"),
        "fraud": await desk.open_case(desk.seed(2_500), reason="fraud_suspected"),
        "duplicate": await desk.open_case(duplicate, reason="duplicate_charge"),
    }
    await asyncio.gather(*(desk.reaches(c, "awaiting_agent", "awaiting_info", "refunding",
                                        "refunded", "completed")
                           for c in opened.values()))
    return opened


async def test_the_pinned_policy_reproduces_every_recorded_decision(
        desk: ConsoleDesk, decided: dict[str, str]) -> None:
    past = await cases_for_simulation(desk.client, DEFAULT_POLICY, None,
                                      task_queue=desk.task_queue)
    assert sorted(c.label for c in past.cases) == sorted(decided.values())
    sim = simulate(past.cases, load_policy(DEFAULT_POLICY))
    assert (sim.checked, sim.reproduced, sim.not_reproduced) == (5, 5, [])
    assert sim.changed == 0
    by_case = {c.label: c.recorded.outcome for c in past.cases if c.recorded}
    assert by_case[decided["approve"]] == "approve"
    assert by_case[decided["agent_review"]] == "agent_review"
    assert by_case[decided["need_info"]] == "need_info"
    assert by_case[decided["duplicate"]] == "approve"
    assert {r.outcome: r.baseline for r in sim.outcomes} == {
        "approve": 2, "agent_review": 2, "need_info": 1, "deny": 0}


def _looser(tmp_path: Path) -> Path:
    data = yaml.safe_load(DEFAULT_POLICY.read_text(encoding="utf-8"))
    data["version"] = "2026-12-01-looser"
    data["approval"]["auto_approve_limit"]["usd"] = 90_000
    path = tmp_path / "looser.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False, allow_unicode=True), "utf-8")
    return path


async def test_policy_simulate_from_cases_on_the_command_line(
        desk: ConsoleDesk, decided: dict[str, str], tmp_path: Path) -> None:
    env = {**os.environ, "TEMPORAL_ADDRESS": desk.client.service_client.config.target_host}
    today = datetime.now(UTC).date().isoformat()
    # a subprocess: this test's event loop keeps the desk's worker answering its queries
    proc = await asyncio.create_subprocess_exec(
        sys.executable, str(ROOT / "starter.py"), "policy", "simulate",
        "--policy", str(_looser(tmp_path)), "--from-cases", "--since", today,
        "--task-queue", desk.task_queue, cwd=ROOT, env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    text = out.decode()
    assert proc.returncode == 0, err.decode()
    assert "5 cases: baseline pinned (2026-11-23: 5) -> new 2026-12-01-looser" in text
    assert "the baseline reproduces the recorded decision of 5 of 5 cases" in text
    assert "agent_review -> approve: 1" in text  # the $500 change of mind
    assert "USD: 39.00 USD -> 539.00 USD (+500.00 USD)" in text
    assert "approval-limits" in text  # per clause


async def test_the_console_runs_the_simulation(desk: ConsoleDesk, decided: dict[str, str],
                                               tmp_path: Path) -> None:
    async with httpx.AsyncClient(base_url=desk.url, timeout=60) as http:
        await signed_in(http, "tok-alice")
        page = await http.get("/console/simulate")
        resp = await http.post("/console/simulate", data={"csrf_token": csrf_of(page.text)},
                               files={"policy": ("looser.yaml", _looser(tmp_path).read_bytes(),
                                                 "application/yaml")})
        assert resp.status_code == 200, resp.text
        assert "5 cases: baseline pinned (2026-11-23: 5) → new 2026-12-01-looser" in resp.text
        assert "reproduce the recorded decision of 5 of 5 cases" in resp.text
        assert "agent_review -&gt; approve: 1" in resp.text
        bad = await http.post("/console/simulate", data={
            "csrf_token": csrf_of(page.text), "policy_text": "version: 1\nclauses: []\n"})
        assert bad.status_code == 422 and "the policy is not valid" in bad.text
