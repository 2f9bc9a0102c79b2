"""RefundCustomer without the email: core.customer_ref's keyed hash, and the API's customer
filter that turns an email into it (and finds, on the real dev server, a case started with
it as its initial search attribute)."""

from __future__ import annotations

import uuid

import pytest
from fastapi import HTTPException
from temporalio.common import SearchAttributePair, TypedSearchAttributes
from temporalio.testing import WorkflowEnvironment

from api.agents import cases_query, customer_filter
from core import search_attributes as sa
from core.customer_ref import customer_attribute, customer_ref, is_customer_ref
from core.models import RefundRequest
from tests.api_support import api_settings, app_for, eventually, http


def test_the_reference_is_a_keyed_hash_of_the_normalized_email():
    ref = customer_ref("Lee.Kim@Example.com ", "key-1")
    assert ref == customer_ref("lee.kim@example.com", "key-1")
    assert ref != customer_ref("lee.kim@example.com", "key-2")
    assert ref != customer_ref("lee.kin@example.com", "key-1")
    assert is_customer_ref(ref) and len(ref) == len("cust_") + 32
    assert "lee" not in ref and not is_customer_ref("lee@example.com")
    with pytest.raises(ValueError, match="CUSTOMER_REF_KEY"):
        customer_ref("lee@example.com", "")


def test_the_filter_translates_an_email_and_takes_a_reference_as_it_is():
    settings = api_settings(CUSTOMER_REF_KEY="k")
    ref = customer_ref("lee@example.com", "k")
    # The address itself too: cases started before RefundCustomer stopped holding emails.
    assert customer_filter("LEE@example.com", settings) == [ref, "lee@example.com"]
    assert customer_filter(ref, settings) == [ref]
    with pytest.raises(HTTPException) as err:
        customer_filter("not an email", settings)
    assert err.value.status_code == 422
    assert cases_query(customer=[ref, "o'b@example.com"]) == (
        f"WorkflowType = 'RefundCase' AND RefundCustomer IN ('{ref}', 'o\\'b@example.com')")


async def test_a_case_is_found_by_email_through_its_reference(dev_env: WorkflowEnvironment):
    settings = api_settings(CUSTOMER_REF_KEY="ref-key")
    email = f"ref-{uuid.uuid4().hex[:8]}@example.com"
    request = RefundRequest(request_id=f"ref-{uuid.uuid4().hex[:8]}", customer_email=email,
                            charge_id="ch_ref", reason="other")
    # What the CaseClient does at start; no worker runs, so the attribute stays as set.
    await dev_env.client.start_workflow(
        "RefundCase", request, id=request.case_id, task_queue=f"idle-{uuid.uuid4().hex[:8]}",
        search_attributes=TypedSearchAttributes([
            customer_attribute(email, "ref-key"),
            SearchAttributePair(sa.STATUS, "received")]))
    try:
        async with http(app_for(dev_env.client, settings)) as api:
            async def listed() -> list[dict]:
                resp = await api.get("/cases", params={"customer": email.upper()},
                                     headers={"Authorization": "Bearer tok-vic"})
                assert resp.status_code == 200, resp.text
                return resp.json()
            [row] = await eventually(listed)
        assert row["id"] == request.case_id
        assert row["customer"] == customer_ref(email, "ref-key")  # never the address
    finally:
        await dev_env.client.get_workflow_handle(request.case_id).terminate("test done")
