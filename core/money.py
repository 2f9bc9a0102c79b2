"""Money as Stripe has it: an integer in the currency's minor unit plus a lowercase ISO
code. Pure (no I/O), so workflows and policies can import it."""

from __future__ import annotations

from decimal import Decimal

# Stripe's zero-decimal and three-decimal currencies.
ZERO_DECIMAL = frozenset(
    "bif clp djf gnf jpy kmf krw mga pyg rwf ugx vnd vuv xaf xof xpf".split()
)
THREE_DECIMAL = frozenset("bhd jod kwd omr tnd".split())
# Stripe takes refunds in these currencies only in coarser steps than the minor unit: the
# last digit of a three-decimal amount must be 0, and ISK is whole krónur (multiples of
# 100) although its API amounts keep two decimals.
_REFUND_STEP = {**dict.fromkeys(THREE_DECIMAL, 10), "isk": 100}


def normalize_currency(code: str) -> str:
    code = code.strip().lower()
    if len(code) != 3 or not code.isalpha():
        raise ValueError(f"{code!r} is not a three-letter ISO currency code")
    return code


def exponent(currency: str) -> int:
    """Digits after the decimal point in the currency's minor unit (JPY 0, USD 2, KWD 3)."""
    c = currency.lower()
    if c in ZERO_DECIMAL:
        return 0
    if c in THREE_DECIMAL:
        return 3
    return 2


def refund_step(currency: str) -> int:
    """The smallest amount, in minor units, that Stripe refunds in `currency`."""
    return _REFUND_STEP.get(currency.lower(), 1)


def round_down_to_step(amount: int, currency: str) -> int:
    """The largest refundable amount not above `amount` (6333 KWD fils -> 6330)."""
    step = refund_step(currency)
    return amount - amount % step


def to_decimal(amount: int, currency: str) -> Decimal:
    """12345 usd -> Decimal('123.45'); 500 jpy -> Decimal('500')."""
    return Decimal(amount).scaleb(-exponent(currency))


def from_decimal(value: Decimal | str, currency: str) -> int:
    """Decimal('123.45') usd -> 12345. Refuses values finer than the minor unit."""
    scaled = Decimal(value).scaleb(exponent(currency))
    if scaled != scaled.to_integral_value():
        raise ValueError(f"{value} {currency.upper()} is finer than the currency's minor unit")
    return int(scaled)


def plain(amount: int, currency: str) -> str:
    """Locale-free rendering for logs and timelines: '123.45 USD', '500 JPY'."""
    return f"{to_decimal(amount, currency)} {currency.upper()}"
