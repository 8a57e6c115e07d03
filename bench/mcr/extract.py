"""Answer extraction shared by MCR-Bench's tasks: from a model's raw output to a normalized answer or None.

A reproducibility benchmark compares answers across runs, so extraction must be deterministic and strict:
an output that holds no valid answer (empty, malformed, cut off by the token limit) gives None, never a
guess. Every rule reads the *answer segment*: the text after the last "Answer:" (case-insensitive), or the
whole text when there is none, and takes the first valid answer in it.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation, localcontext

CENT = Decimal("0.01")

_MARKER = re.compile(r"answer\s*:", re.IGNORECASE)
# A run of digits with the commas and dots glued to it; validated in parse_amount so that "12.3.4" or
# "1,23" is rejected as a whole instead of being read as its first well-formed piece. A minus sign counts only
# when glued to the number or its "$": "- 5" is a list bullet.
_NUMBER = re.compile(r"(?<![\w.])(-?)(?:\$\s?)?(-?)(\d+(?:[.,]\d+)*|\.\d+)")
_GROUPED = re.compile(r"\d{1,3}(?:,\d{3})+(?:\.\d+)?")
_PLAIN = re.compile(r"\d*(?:\.\d+)?")


def answer_segment(text: str) -> str:
    """The text after the last "Answer:" (any case, spaces allowed before the colon), else all of it."""
    ends = [m.end() for m in _MARKER.finditer(text)]
    return text[ends[-1]:] if ends else text


def _check_text(text) -> str | None:
    if text is None:
        return None
    if not isinstance(text, str):
        raise TypeError(f"text must be a str or None, got {type(text).__name__}")
    return text


def word_pattern(words: Sequence[str]) -> re.Pattern:
    """Case-insensitive whole-word match of any of ``words``; longer words first so "no contact" beats "no".

    Lookarounds instead of \\b so that words starting or ending in punctuation ("(A)") still match whole.
    """
    if not words:
        raise ValueError("words must not be empty")
    alts = "|".join(re.escape(w) for w in sorted(words, key=len, reverse=True))
    return re.compile(rf"(?<!\w)(?:{alts})(?!\w)", re.IGNORECASE)


def first_label(text: str | None, labels: Sequence[str]) -> str | None:
    """The first of ``labels`` in the answer segment, spelled as in ``labels``; None if there is none.

    Whole words only: "not", "know" and "nothing" do not contain the label "no", while "No." and "no," do;
    a truncated "Answer: ma" is None rather than "maybe".
    """
    return label_extractor(labels)(text)


def label_extractor(labels: Sequence[str]) -> Callable[[str | None], str | None]:
    """An extract() for a fixed label set (see first_label); compiles the pattern once."""
    canon = {w.casefold(): w for w in labels}
    if len(canon) != len(labels):
        raise ValueError(f"labels must be distinct ignoring case, got {list(labels)}")
    pat = word_pattern(labels)

    def extract(text: str | None) -> str | None:
        text = _check_text(text)
        if text is None:
            return None
        m = pat.search(answer_segment(text))
        return canon[m.group(0).casefold()] if m else None

    return extract


def normalize_label(value, labels: Sequence[str]) -> str | None:
    """A gold label (e.g. "Yes") spelled as in ``labels`` (e.g. "yes"); None if it is not one of them."""
    canon = {w.casefold(): w for w in labels}
    return canon.get(str(value).strip().casefold())


def parse_amount(token: str) -> Decimal | None:
    """A money amount such as "$1,234.5", "1234.50" or "-3" as a Decimal, or None if malformed.

    Commas are accepted only as thousands separators ("1,234" yes, "1,23" and "12,5" no); more than
    one decimal point ("12.3.4") is malformed.
    """
    s = token.strip().replace(" ", "")
    neg = s.startswith("-") or s.startswith("$-")
    s = s.lstrip("-$").rstrip(".")
    if not s or "-" in s or "$" in s:
        return None
    if "," in s:
        if not _GROUPED.fullmatch(s):
            return None
        s = s.replace(",", "")
    elif not _PLAIN.fullmatch(s) or s in ("", "."):
        return None
    if len(s) > 60:  # beyond any real amount; also keeps quantize inside the context's precision
        return None
    try:
        d = Decimal(s)
    except InvalidOperation:
        return None
    return -d if neg else d


def to_cents(d: Decimal) -> str:
    """The canonical answer string: exactly two decimals, halves rounded up (away from zero)."""
    with localcontext() as ctx:
        ctx.prec = 100
        q = d.quantize(CENT, rounding=ROUND_HALF_UP)
    if q == 0:
        q = abs(q)  # "-0.00" and "0.00" are the same answer
    return format(q, "f")


def extract_amount(text: str | None) -> str | None:
    """The first number in the answer segment, normalized to two decimals; None if absent or malformed.

    Tolerates "$", thousands commas, a trailing period and spaces. The first number, not the last: the
    prompts end with "Answer:", so the answer opens the output and what follows is the model running on
    (an explanation, a formula, a next question), whose numbers must not be taken for the answer.
    """
    text = _check_text(text)
    if text is None:
        return None
    m = _NUMBER.search(answer_segment(text))
    if not m:
        return None
    sign = "-" if (m.group(1) or m.group(2)) else ""
    d = parse_amount(sign + m.group(3))
    return None if d is None else to_cents(d)


def pattern_extractor(pattern: str) -> Callable[[str | None], str | None]:
    """An extract() for a user's regex with exactly one group: group 1 of its first match in the answer
    segment, stripped; None if it does not match or the group is empty."""
    try:
        pat = re.compile(pattern)
    except re.error as e:
        raise ValueError(f"pattern {pattern!r} is not a valid regular expression: {e}") from None
    if pat.groups != 1:
        raise ValueError(f"pattern {pattern!r} must have exactly one group, has {pat.groups}")

    def extract(text: str | None) -> str | None:
        text = _check_text(text)
        if text is None:
            return None
        m = pat.search(answer_segment(text))
        got = (m.group(1) or "").strip() if m else ""
        return got or None

    return extract
