"""MCR-Bench's finance items, generated in code with exact answers in Python ``decimal``.

No license-clean finance QA set could be brought offline, and arithmetic with a stated rounding rule has
one right answer to the cent, which is what a mission-critical reproducibility check needs. The pure
functions (amortization_payment, compound_value, fx_convert, progressive_tax) hold the maths; the
``*_item`` generators draw the inputs from a ``random.Random`` and state every number in the prompt.
Every answer is rounded once, at the end, to cents with ROUND_HALF_UP, and the prompts say so.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from decimal import ROUND_HALF_UP, Decimal, localcontext

CENT = Decimal("0.01")
# Far beyond the 2 decimals kept: (1 + r/365) ** 10950 and its reciprocal stay exact to well under a cent.
_PREC = 80

ANSWER_FORMAT = 'Give the answer as a number on a line of the form "Answer: <number>".\nAnswer:'
ROUNDING = "Do not round intermediate results; round the final answer to the nearest cent (halves round up)."


def _dec(name: str, x) -> Decimal:
    # floats are refused: 0.1 is not one tenth, and the point of these items is an exact answer
    if isinstance(x, bool) or not isinstance(x, (Decimal, int, str)):
        raise TypeError(f"{name} must be a Decimal, int or str (not a float), got {type(x).__name__}")
    d = Decimal(x)
    if not d.is_finite():
        raise ValueError(f"{name} must be finite, got {x!r}")
    return d


def _count(name: str, x, lo: int = 1) -> int:
    if isinstance(x, bool) or not isinstance(x, int) or x < lo:
        raise ValueError(f"{name} must be an int >= {lo}, got {x!r}")
    return x


def _cents(d: Decimal) -> Decimal:
    return d.quantize(CENT, rounding=ROUND_HALF_UP)


def _terms(principal, annual_rate_pct, years, periods_per_year, *, zero_principal: bool):
    """Checked (P, annual rate in %, periods per year, number of periods)."""
    p, rate = _dec("principal", principal), _dec("annual_rate_pct", annual_rate_pct)
    if p < 0 or (p == 0 and not zero_principal):
        raise ValueError(f"principal must be {'>=' if zero_principal else '>'} 0, got {principal}")
    if rate < 0:
        raise ValueError(f"annual_rate_pct must be >= 0, got {annual_rate_pct}")
    m = _count("periods_per_year", periods_per_year)
    return p, rate, m, _count("years", years) * m


def amortization_payment(principal: Decimal, annual_rate_pct: Decimal, years: int,
                         periods_per_year: int = 12) -> Decimal:
    """Level payment of a fixed-rate loan: P * r / (1 - (1 + r) ** -n), r = rate / 100 / periods per year,
    n = years * periods per year (P / n at a zero rate); rounded to cents, halves up."""
    p, rate, m, n = _terms(principal, annual_rate_pct, years, periods_per_year, zero_principal=False)
    with localcontext() as ctx:
        ctx.prec = _PREC
        if rate == 0:
            return _cents(p / n)
        r = rate / 100 / m
        return _cents(p * r / (1 - (1 + r) ** -n))


def compound_value(principal: Decimal, annual_rate_pct: Decimal, years: int, periods_per_year: int) -> Decimal:
    """Future value with compounding ``periods_per_year`` times a year: P * (1 + rate / 100 / m) ** (m * years);
    rounded to cents, halves up."""
    p, rate, m, n = _terms(principal, annual_rate_pct, years, periods_per_year, zero_principal=True)
    with localcontext() as ctx:
        ctx.prec = _PREC
        return _cents(p * (1 + rate / 100 / m) ** n)


def fx_convert(amount: Decimal, src_per_base: Decimal, dst_per_base: Decimal) -> Decimal:
    """Convert ``amount`` of a source currency through a base currency: amount / src_per_base * dst_per_base,
    with both rates quoted in units per 1 base unit (1 for the base itself); rounded to cents, halves up."""
    a = _dec("amount", amount)
    src, dst = _dec("src_per_base", src_per_base), _dec("dst_per_base", dst_per_base)
    if src <= 0 or dst <= 0:
        raise ValueError(f"src_per_base and dst_per_base must be > 0, got {src_per_base} and {dst_per_base}")
    with localcontext() as ctx:
        ctx.prec = _PREC
        return _cents(a * dst / src)


def progressive_tax(income: Decimal, brackets: Sequence[tuple[Decimal, Decimal]],
                    deduction: Decimal = Decimal(0)) -> Decimal:
    """Tax on income minus ``deduction`` (not below zero) under marginal ``brackets``: (lower bound, rate in
    percent) pairs, ascending from 0; each rate taxes only the part of taxable income inside its band, up to
    the next lower bound. Rounded to cents, halves up."""
    if not brackets:
        raise ValueError("brackets must not be empty")
    bounds = [_dec("bracket lower bound", b) for b, _ in brackets]
    rates = [_dec("bracket rate", r) for _, r in brackets]
    if bounds[0] != 0 or any(a >= b for a, b in zip(bounds, bounds[1:], strict=False)):
        raise ValueError(f"brackets' lower bounds must start at 0 and increase strictly, got {bounds}")
    if any(not 0 <= r <= 100 for r in rates):
        raise ValueError(f"bracket rates must be percentages in [0, 100], got {rates}")
    taxable = max(_dec("income", income) - _dec("deduction", deduction), Decimal(0))
    with localcontext() as ctx:
        ctx.prec = _PREC
        tax = Decimal(0)
        for lo, hi, rate in zip(bounds, bounds[1:] + [None], rates, strict=True):
            top = taxable if hi is None else min(taxable, hi)
            if top > lo:
                tax += (top - lo) * rate / 100
        return _cents(tax)


# -- generators: (rng) -> (prompt, gold) ------------------------------------------------------------------

def _money(d: Decimal) -> str:
    return "$" + format(d, ",.2f")


def _pct(d: Decimal) -> str:
    return format(d.normalize(), "f") + "%"


def _ask(body: str) -> str:
    return f"{body} {ROUNDING}\n{ANSWER_FORMAT}"


def amortization_item(rng: random.Random) -> tuple[str, str]:
    principal = Decimal(rng.randrange(50, 9501) * 100)  # $5,000 .. $950,000
    rate = Decimal(rng.randrange(8, 97)) / 8  # 1% .. 12% in eighths of a point
    years = rng.choice((5, 10, 15, 20, 25, 30))
    gold = amortization_payment(principal, rate, years)
    body = (f"A fixed-rate loan of {_money(principal)} at an annual interest rate of {_pct(rate)} is repaid in equal "
            f"monthly payments over {years} years ({years * 12} payments). Interest is compounded monthly at the "
            f"annual rate divided by 12. What is the monthly payment in dollars?")
    return _ask(body), format(gold, "f")


_PERIODS = {1: "annually (once a year)", 2: "semi-annually (twice a year)", 4: "quarterly (4 times a year)",
            12: "monthly (12 times a year)", 365: "daily (365 times a year)"}


def compound_item(rng: random.Random) -> tuple[str, str]:
    principal = Decimal(rng.randrange(10, 1001) * 100)  # $1,000 .. $100,000
    rate = Decimal(rng.randrange(2, 41)) / 4  # 0.5% .. 10% in quarter points
    years = rng.randrange(1, 31)
    m = rng.choice(tuple(_PERIODS))
    gold = compound_value(principal, rate, years, m)
    body = (f"A deposit of {_money(principal)} earns interest at an annual rate of {_pct(rate)}, compounded "
            f"{_PERIODS[m]}, with each period's rate equal to the annual rate divided by {m}. Nothing else is "
            f"deposited or withdrawn. What is the balance in dollars after {years} year{'s' * (years > 1)}?")
    return _ask(body), format(gold, "f")


# Units per 1 USD, in ten-thousandths, around which the items' rates are drawn (+-8%).
_FX_REF = {"EUR": 9200, "GBP": 7900, "CHF": 8800, "CAD": 13600, "AUD": 15200, "NZD": 16600, "SGD": 13400,
           "SEK": 104500, "NOK": 106000}


def fx_item(rng: random.Random) -> tuple[str, str]:
    quoted = rng.sample(sorted(_FX_REF), 3)
    rates = {"USD": Decimal(1)}
    for c in quoted:
        rates[c] = Decimal(_FX_REF[c] * rng.randrange(920, 1081) // 1000) / 10000
    if rng.randrange(2):  # a cross rate: neither side is the base currency
        src, dst = rng.sample(quoted, 2)
    else:
        c = rng.choice(quoted)
        src, dst = rng.choice((("USD", c), (c, "USD")))
    amount = Decimal(rng.randrange(10000, 10000000)) / 100  # 100.00 .. 99,999.99
    gold = fx_convert(amount, rates[src], rates[dst])
    table = ", ".join(f"1 USD = {format(rates[c], '.4f')} {c}" for c in quoted)
    body = (f"Exchange rates: {table}. Convert {format(amount, ',.2f')} {src} to {dst} using only these rates "
            f"(through USD when neither currency is USD). What is the amount in {dst}?")
    return _ask(body), format(gold, "f")


_TAX_RATES = ("5", "7.5", "10", "12", "15", "20", "22", "24", "25", "30", "32", "35", "37", "40", "45")


def tax_item(rng: random.Random) -> tuple[str, str]:
    k = rng.randrange(3, 6)
    bounds = [Decimal(0)]
    for _ in range(k - 1):
        bounds.append(bounds[-1] + rng.randrange(5, 61) * 1000)
    rates = sorted((Decimal(r) for r in rng.sample(_TAX_RATES, k)))
    deduction = Decimal(rng.randrange(0, 31) * 500)
    income = Decimal(rng.randrange(1000000, 50000000)) / 100  # 10,000.00 .. 499,999.99
    gold = progressive_tax(income, list(zip(bounds, rates, strict=True)), deduction)
    lines = [f"- above {_money(lo)} up to {_money(hi)}: {_pct(r)}"
             for lo, hi, r in zip(bounds[:-1], bounds[1:], rates[:-1], strict=True)]
    lines.append(f"- above {_money(bounds[-1])}: {_pct(rates[-1])}")
    body = ("Income tax uses these marginal brackets on taxable income; each rate applies only to the part of "
            "taxable income inside its band:\n" + "\n".join(lines) + "\n"
            f"Taxable income is income minus a standard deduction of {_money(deduction)}, and not below zero. "
            f"A taxpayer's income is {_money(income)}. How much tax is owed, in dollars?")
    return _ask(body), format(gold, "f")


# task name -> (description, generator); tasks.py registers them
ITEMS: dict[str, tuple[str, Callable[[random.Random], tuple[str, str]]]] = {
    "finance_amortization": ("monthly payment of a fixed-rate loan, to the cent", amortization_item),
    "finance_compound": ("future value under periodic compound interest, to the cent", compound_item),
    "finance_fx": ("currency conversion through given rates, cross rates via USD, to the cent", fx_item),
    "finance_tax": ("income tax under a progressive bracket table with a deduction, to the cent", tax_item),
}
