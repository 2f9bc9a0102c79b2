"""Seed localstripe (or a Stripe test account) with a customer and a paid charge, through
the stripe SDK, for the demo, the end-to-end tests and the API tests.

    python -m stack.stripe_seed --email ana@example.com --amount 4900 --currency usd
"""

from __future__ import annotations

import argparse
import json
import sys

import stripe
from pydantic import BaseModel

from core.config import get_settings

TEST_CARD = "pm_card_visa"  # Stripe's canonical test card; localstripe knows it too


class SeededCharge(BaseModel):
    customer_id: str
    charge_id: str
    payment_intent_id: str
    email: str
    amount: int
    currency: str


def _client(api_base: str, api_key: str) -> stripe.StripeClient:
    return stripe.StripeClient(api_key, base_addresses={"api": api_base}, max_network_retries=0)


def seed_charge(
    api_base: str,
    api_key: str,
    *,
    email: str,
    amount: int,
    currency: str,
    description: str | None = None,
    customer_id: str | None = None,
) -> SeededCharge:
    """A customer (new, or `customer_id`) and a succeeded card payment of `amount` minor
    units, made as a confirmed payment intent as a real checkout would."""
    client = _client(api_base, api_key).v1
    if customer_id is None:
        customer_id = client.customers.create({"email": email}).id
    intent = client.payment_intents.create({
        "amount": amount,
        "currency": currency.lower(),
        "customer": customer_id,
        "payment_method": TEST_CARD,
        "confirm": True,
    })
    if intent.status != "succeeded" or intent.latest_charge is None:
        raise RuntimeError(f"seeding failed: payment intent {intent.id} is {intent.status}")
    charge_id = intent.latest_charge if isinstance(intent.latest_charge, str) else (
        intent.latest_charge.id)
    if description:  # localstripe refuses `description` on payment intents
        client.charges.update(charge_id, {"description": description})
    return SeededCharge(customer_id=customer_id, charge_id=charge_id,
                        payment_intent_id=intent.id, email=email, amount=amount,
                        currency=currency.lower())


def seed_duplicate(api_base: str, api_key: str, original: SeededCharge) -> SeededCharge:
    """The same customer charged the same amount again: a billing error to refund."""
    return seed_charge(api_base, api_key, email=original.email, amount=original.amount,
                       currency=original.currency, customer_id=original.customer_id)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Create a paid charge in Stripe/localstripe.")
    parser.add_argument("--email", required=True)
    parser.add_argument("--amount", type=int, required=True, help="minor units (cents, yen)")
    parser.add_argument("--currency", default="usd")
    parser.add_argument("--description")
    parser.add_argument("--duplicate", action="store_true", help="charge the customer twice")
    args = parser.parse_args(argv)
    settings = get_settings()
    seeded = seed_charge(settings.STRIPE_API_BASE, settings.STRIPE_API_KEY, email=args.email,
                         amount=args.amount, currency=args.currency,
                         description=args.description)
    out = [seeded]
    if args.duplicate:
        out.append(seed_duplicate(settings.STRIPE_API_BASE, settings.STRIPE_API_KEY, seeded))
    json.dump([s.model_dump() for s in out], sys.stdout, indent=2)
    print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
