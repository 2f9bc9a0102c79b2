"""Step 1 of an incident: the dry run. Every charge is found (the lead's list, or the
Stripe query's pages) and looked up, checked for open cases and classified, so the lead
who approves sees how many charges, what totals per currency, and which are already
refunded, disputed or have an open case. Nothing is refunded, nobody is emailed."""

from __future__ import annotations

from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from activities.incident_models import OpenCases
    from activities.policy_activities import (
        LOAD_POLICY,
        POLICY_RETRY_POLICY,
        POLICY_START_TO_CLOSE,
    )
    from activities.stripe_models import (
        LIST_CHARGES,
        LIST_INVOICE_PURCHASES,
        ChargePage,
        ChargeSummary,
        ListChargesInput,
        ListInvoicePurchasesInput,
        PurchasePage,
    )
    from core.contract import DryRun, IncidentPhase, RefundReason, Tally
    from policies.model import Policy

    from .. import stripe_rate
    from .charges import classify, look_up, open_cases
    from .runtime import IncidentRuntime, totals_line


async def dry_run(rt: IncidentRuntime) -> None:
    state = rt.state
    if state.dry_run is None:
        state.dry_run = DryRun()
        rt.record("dry_run_started", "Dry run: looking every charge up in Stripe")
    await pin_policy_window(rt)
    query = rt.request.query
    if query is not None and not state.listing_done:
        if query.price is None and query.product is None:
            await _list_charges(rt)
        else:
            await _list_invoice_purchases(rt)
    todo = rt.request.charges or state.candidates
    while state.dry_position < len(todo) and not rt.cancelling:
        batch = todo[state.dry_position:state.dry_position + rt.request.batch]
        charges = await look_up(batch)
        if rt.request.query is not None:  # found through invoices: keep those in scope
            charges = [c for c in charges if c.found and rt.request.query.matches(c)]
            state.refs.extend(c.ref for c in charges)
        _tally(rt, charges, await open_cases(rt.request.incident_id, charges))
        state.dry_position += len(batch)
        rt.run_processed += len(batch)
        rt.show("the dry run's look-ups")
        await rt.continue_as_new_if_due()
    if rt.cancelling:
        return
    state.candidates = []
    state.counts.charges = state.dry_run.charges
    state.phase = IncidentPhase.awaiting_approval
    d = state.dry_run
    skipped = ", ".join(f"{reason} {t.count}" for reason, t in sorted(d.skipped.items()))
    rt.record("dry_run_done", f"Dry run: {d.charges} charges, {d.to_refund} to refund "
              f"({totals_line(d.totals)}); skipped: {skipped or 'none'}; open cases to "
              f"join: {d.open_case_on_charge.count}; customers with another open case: "
              f"{d.customer_has_open_case.count}. Waiting for a second lead's approval")


async def pin_policy_window(rt: IncidentRuntime) -> None:
    """The billing-error window of the policy in force, once: a charge older than it is
    skipped (its case would be denied, and the customer told so)."""
    if rt.state.policy_window_days is not None:
        return
    policy = await workflow.execute_activity(
        LOAD_POLICY, result_type=Policy, start_to_close_timeout=POLICY_START_TO_CLOSE,
        retry_policy=POLICY_RETRY_POLICY, summary="Load the refund policy in force")
    rule = policy.reasons.get(RefundReason.billing_error)
    rt.state.policy_window_days = rule.window.days if rule is not None else 0
    rt.record("policy_window", f"Policy {policy.version}: billing errors within "
              f"{rt.state.policy_window_days or 'any number of'} days")


def _tally(rt: IncidentRuntime, charges: list[ChargeSummary], opens: OpenCases) -> None:
    d = rt.state.dry_run
    assert d is not None
    window = rt.state.policy_window_days or None
    for charge in charges:
        d.charges += 1
        verdict = classify(charge, rt.request, window_days=window, now=workflow.now())
        if verdict.skip is not None:
            d.skipped.setdefault(verdict.skip, Tally()).add(charge.ref)
            continue
        d.to_refund += 1
        currency = charge.currency or "usd"
        d.totals[currency] = d.totals.get(currency, 0) + (rt.request.amount.due(charge) or 0)
        if charge.ref in opens.on_charge:
            d.open_case_on_charge.add(charge.ref)
        elif charge.ref in opens.of_customer:
            d.customer_has_open_case.add(charge.ref)


async def _list_charges(rt: IncidentRuntime) -> None:
    """The query's charges, a page (one request) at a time, classified as they come."""
    query, state = rt.request.query, rt.state
    assert query is not None
    while not state.listing_done and not rt.cancelling:
        page = await stripe_rate.call(
            LIST_CHARGES, ListChargesInput(
                created_from=query.created_from, created_to=query.created_to,
                amount=query.amount, currency=query.currency,
                starting_after=state.list_cursor),
            result_type=ChargePage, summary="List the query's charges (a page)")
        state.refs.extend(c.ref for c in page.charges)
        _tally(rt, page.charges, await open_cases(rt.request.incident_id, page.charges))
        state.list_cursor, state.listing_done = page.next_after, page.next_after is None
        rt.run_processed += len(page.charges)
        rt.show("the query's pages")
        await rt.continue_as_new_if_due()


async def _list_invoice_purchases(rt: IncidentRuntime) -> None:
    """The charges (or payment intents) that paid invoices of the price / product."""
    query, state = rt.request.query, rt.state
    assert query is not None
    seen = set(state.candidates)
    while not state.listing_done and not rt.cancelling:
        page = await stripe_rate.call(
            LIST_INVOICE_PURCHASES, ListInvoicePurchasesInput(
                created_from=query.created_from, created_to=query.created_to,
                price=query.price, product=query.product, starting_after=state.list_cursor),
            result_type=PurchasePage, summary="List the query's invoices (a page)")
        fresh = [ref for ref in page.refs if ref not in seen]
        seen.update(fresh)
        state.candidates.extend(fresh)
        state.list_cursor, state.listing_done = page.next_after, page.next_after is None
        rt.show("the query's invoices")
