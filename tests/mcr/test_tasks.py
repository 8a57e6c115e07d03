"""MCR-Bench's tasks without a GPU: data loading and counts, deterministic examples, prompts, the finance
generator's exact answers (against hand-computed values and an independent Fraction reference), answer
extraction on malformed, truncated and decoy outputs, task selection, and users' JSONL tasks.
"""

import hashlib
import json
import re
from decimal import Decimal as D
from fractions import Fraction as F
from math import floor

import pytest

from bench.mcr import extract, finance, tasks
from bench.mcr.tasks import Example

COUNTS = {"pubmedqa": 300, "legalbench_hearsay": 95, "legalbench_personal_jurisdiction": 50,
          "legalbench_abercrombie": 95}
FINANCE = ["finance_amortization", "finance_compound", "finance_fx", "finance_tax"]
DATA = tasks.DATA


def _jsonl(path):
    return [json.loads(line) for line in open(path, encoding="utf-8")]


# -- loading, ids, determinism ----------------------------------------------------------------------------

def test_builtin_tasks_are_registered_with_their_domains_and_counts():
    assert list(tasks.REGISTRY)[:8] == [*COUNTS, *FINANCE]  # users' tasks may follow
    assert {n: tasks.get(n).domain for n in [*COUNTS, *FINANCE]} == {
        "pubmedqa": "medicine", **{n: "law" for n in list(COUNTS)[1:]}, **{n: "finance" for n in FINANCE}}
    for name, count in COUNTS.items():
        ex = tasks.get(name).examples()
        assert len(ex) == count, name
        assert all(isinstance(e, Example) and e.task == name for e in ex)
    for name in FINANCE:
        assert len(tasks.get(name).examples()) == tasks.FINANCE_DEFAULT_N == 100
    for t in tasks.REGISTRY.values():
        assert t.description and 16 <= t.max_new_tokens <= 32


def test_gold_answers_match_the_data_files_lower_cased():
    rows = _jsonl(DATA / "pubmedqa.jsonl")
    ex = tasks.get("pubmedqa").examples()
    assert [e.id for e in ex] == [r["id"] for r in rows]  # the PubMed ids, in file order
    assert [e.gold for e in ex] == [r["answer"] for r in rows]
    assert {e.gold for e in ex} == {"yes", "no", "maybe"}
    legal = _jsonl(DATA / "legalbench.jsonl")
    for task, labels in (("hearsay", {"yes", "no"}), ("personal_jurisdiction", {"yes", "no"}),
                         ("abercrombie", set(tasks.ABERCROMBIE_LABELS))):
        ex = tasks.get(f"legalbench_{task}").examples()
        assert [e.gold for e in ex] == [r["answer"].lower() for r in legal if r["task"] == task]
        assert {e.gold for e in ex} == labels


def test_ids_are_unique_and_stable():
    for t in tasks.REGISTRY.values():
        ids = [e.id for e in t.examples()]
        assert len(set(ids)) == len(ids), t.name
    # LegalBench ids are a hash of the text: pinned here so that a change of scheme is seen
    first = _jsonl(DATA / "legalbench.jsonl")[0]
    want = hashlib.sha256(first["input"]["text"].encode()).hexdigest()[:12]
    assert tasks.get("legalbench_hearsay").examples()[0].id == want
    assert [e.id for e in tasks.get("finance_tax").examples(3, seed=7)] == ["s7-0000", "s7-0001", "s7-0002"]


@pytest.mark.parametrize("name", ["pubmedqa", "legalbench_personal_jurisdiction"])
def test_fixed_sets_sample_deterministically_per_seed(name):
    t = tasks.get(name)
    everything = t.examples()
    a, b = t.examples(20, seed=1), t.examples(20, seed=1)
    assert a == b and len(a) == 20 and len({e.id for e in a}) == 20
    assert t.examples(20, seed=2) != a
    pos = {e.id: i for i, e in enumerate(everything)}
    assert [pos[e.id] for e in a] == sorted(pos[e.id] for e in a)  # kept in file order
    assert set(a) <= set(t.examples(30, seed=1))  # a larger sample contains a smaller one
    assert t.examples(None, seed=5) == everything == t.examples(10_000, seed=3)  # n above the size: all
    assert t.examples(0) == []


@pytest.mark.parametrize("name", FINANCE)
def test_generated_items_are_deterministic_and_differ_between_seeds(name):
    t = tasks.get(name)
    a = t.examples(30, seed=0)
    assert a == t.examples(30, seed=0)
    assert t.examples(10, seed=0) == a[:10]  # a prefix: items are drawn in sequence
    b = t.examples(30, seed=1)
    assert len({e.prompt for e in a} & {e.prompt for e in b}) == 0
    assert len({e.prompt for e in a}) == 30
    assert len(t.examples(1000, seed=2)) == 1000  # any size


@pytest.mark.parametrize("n,seed", [(-1, 0), (1.5, 0), (True, 0), (3, -1), (3, "0"), (3, None)])
def test_bad_n_or_seed_is_refused(n, seed):
    for name in ("pubmedqa", "finance_fx"):
        with pytest.raises(ValueError, match="n must|seed must"):
            tasks.get(name).examples(n, seed)


# -- prompts ----------------------------------------------------------------------------------------------

def test_pubmedqa_prompt_has_the_abstract_question_and_answer_format():
    row = _jsonl(DATA / "pubmedqa.jsonl")[0]
    p = tasks.get("pubmedqa").examples()[0].prompt
    assert row["context"] in p and row["question"] in p
    assert "exactly one of yes, no or maybe" in p and 'on a line starting with "Answer:"' in p
    assert p.endswith("\nAnswer:") and p.index(row["context"]) < p.index(row["question"])


@pytest.mark.parametrize("task,question", [
    ("hearsay", "Is the evidence hearsay?"),
    ("personal_jurisdiction", "Does the court have personal jurisdiction over the defendant?"),
    ("abercrombie", "Classify the mark into one of the five Abercrombie categories."),
])
def test_legal_prompts_have_the_question_text_and_answer_format(task, question):
    rows = [r for r in _jsonl(DATA / "legalbench.jsonl") if r["task"] == task]
    for row, ex in zip(rows, tasks.get(f"legalbench_{task}").examples(), strict=True):
        assert question in ex.prompt and row["input"]["text"].strip() in ex.prompt
        assert 'on a line starting with "Answer:"' in ex.prompt and ex.prompt.endswith("\nAnswer:")
    if task == "abercrombie":
        assert "generic, descriptive, suggestive, arbitrary or fanciful" in ex.prompt
    else:
        assert "exactly one of Yes or No" in ex.prompt


def test_finance_prompts_state_the_format_and_rounding():
    for name in FINANCE:
        for e in tasks.get(name).examples(20, seed=3):
            assert 'on a line of the form "Answer: <number>"' in e.prompt and e.prompt.endswith("\nAnswer:")
            assert "nearest cent (halves round up)" in e.prompt
            assert re.fullmatch(r"\d+\.\d\d", e.gold), e.gold


# -- finance maths: hand-computed values ------------------------------------------------------------------

@pytest.mark.parametrize("principal,rate,years,want", [
    ("200000", "6", 30, "1199.10"),  # the textbook 30-year mortgage
    ("100000", "12", 1, "8884.88"),  # 1000 * 0.01 * 1.01**12 / (1.01**12 - 1), 1.01**12 = 1.12682503...
    ("250000", "4.5", 30, "1266.71"),
    ("10000", "5", 5, "188.71"),  # 188.712336...
    ("12000", "0", 1, "1000.00"),  # no interest: principal / payments
])
def test_amortization_payment(principal, rate, years, want):
    assert finance.amortization_payment(D(principal), D(rate), years) == D(want)


@pytest.mark.parametrize("principal,rate,years,m,want", [
    ("1000", "5", 10, 1, "1628.89"),  # 1.05**10 = 1.628894626777...
    ("1000", "5", 3, 1, "1157.63"),  # 1157.625 exactly: halves round up (half-even would give .62)
    ("1000", "12", 1, 12, "1126.83"),  # 1.01**12 = 1.126825030...
    ("10000", "8", 2, 4, "11716.59"),  # 1.02**8 = 1.171659381...
    ("1000", "5", 1, 365, "1051.27"),  # (1 + 0.05/365)**365 = 1.051267496...
])
def test_compound_value(principal, rate, years, m, want):
    assert finance.compound_value(D(principal), D(rate), years, m) == D(want)


@pytest.mark.parametrize("amount,src,dst,want", [
    ("100", "1", "0.9215", "92.15"),  # USD -> EUR
    ("1000", "0.9215", "1", "1085.19"),  # EUR -> USD: 1000 / 0.9215 = 1085.18719...
    ("1000", "0.9215", "0.7893", "856.54"),  # EUR -> GBP through USD: 789.3 / 0.9215 = 856.53825...
    ("10.01", "1", "0.5", "5.01"),  # 5.005: halves round up
])
def test_fx_convert(amount, src, dst, want):
    assert finance.fx_convert(D(amount), D(src), D(dst)) == D(want)


BRACKETS = [(D(0), D(10)), (D(10000), D(20)), (D(40000), D(30))]


@pytest.mark.parametrize("income,deduction,want", [
    ("55000", "0", "11500.00"),  # 1000 + 6000 + 4500
    ("10000", "0", "1000.00"),  # exactly at a bound: nothing at 20%
    ("55000", "5000", "10000.00"),  # 50000 taxable: 1000 + 6000 + 3000
    ("5000", "8000", "0.00"),  # the deduction exceeds the income: no negative tax
    ("40000.05", "0", "7000.02"),  # 7000 + 0.05 * 30% = 7000.015, halves up
])
def test_progressive_tax(income, deduction, want):
    assert finance.progressive_tax(D(income), BRACKETS, D(deduction)) == D(want)


def test_finance_functions_refuse_bad_inputs():
    with pytest.raises(TypeError, match="principal"):
        finance.amortization_payment(200000.0, D(6), 30)
    with pytest.raises(ValueError, match="years"):
        finance.amortization_payment(D(1000), D(6), 0)
    with pytest.raises(ValueError, match="annual_rate_pct"):
        finance.compound_value(D(1000), D(-1), 1, 12)
    with pytest.raises(ValueError, match="src_per_base"):
        finance.fx_convert(D(1), D(0), D(1))
    with pytest.raises(ValueError, match="start at 0"):
        finance.progressive_tax(D(1), [(D(5), D(10))])
    with pytest.raises(ValueError, match="increase strictly"):
        finance.progressive_tax(D(1), [(D(0), D(10)), (D(0), D(20))])


# -- finance items: the prompt states every number, and the gold is exact --------------------------------

def _half_up_cents(x: F) -> str:
    c = floor(x * 100 + F(1, 2))
    return f"{c // 100}.{c % 100:02d}"


def _num(s: str) -> F:
    return F(s.replace(",", "").replace("$", ""))


def _reference(name: str, prompt: str) -> str:
    """The answer recomputed from the numbers in the prompt alone, in exact rational arithmetic."""
    if name == "finance_amortization":
        p, rate, years = re.search(r"loan of (\S+) at an annual interest rate of ([\d.]+)% .* over (\d+) years",
                                   prompt).groups()
        r, n = _num(rate) / 1200, int(years) * 12
        return _half_up_cents(_num(p) * r / (1 - (1 + r) ** -n) if r else _num(p) / n)
    if name == "finance_compound":
        p, rate, m, years = re.search(r"deposit of (\S+) .* rate of ([\d.]+)%, .* divided by (\d+)\. .* after (\d+) "
                                      r"year", prompt).groups()
        return _half_up_cents(_num(p) * (1 + _num(rate) / 100 / int(m)) ** (int(m) * int(years)))
    if name == "finance_fx":
        rates = {c: _num(v) for v, c in re.findall(r"1 USD = ([\d.]+) ([A-Z]{3})", prompt)}
        rates["USD"] = F(1)
        amount, src, dst = re.search(r"Convert ([\d,.]+) ([A-Z]{3}) to ([A-Z]{3})", prompt).groups()
        return _half_up_cents(_num(amount) / rates[src] * rates[dst])
    if name == "finance_tax":
        bands = [(_num(lo), _num(hi) if hi else None, _num(r))
                 for lo, hi, r in re.findall(r"- above (\S+?)(?: up to (\S+?))?: ([\d.]+)%", prompt)]
        deduction = _num(re.search(r"deduction of (\$[\d,]+\.\d\d)", prompt).group(1))
        income = _num(re.search(r"income is (\$[\d,]+\.\d\d)", prompt).group(1))
        taxable = max(income - deduction, F(0))
        return _half_up_cents(sum((((taxable if hi is None else min(taxable, hi)) - lo) * r / 100
                                   for lo, hi, r in bands if taxable > lo), F(0)))
    raise AssertionError(name)


@pytest.mark.parametrize("name", FINANCE)
def test_generated_gold_equals_an_exact_recomputation_from_the_prompt(name):
    for seed in (0, 1):
        for e in tasks.get(name).examples(40, seed=seed):
            assert e.gold == _reference(name, e.prompt), e.prompt


def test_generated_items_cover_their_cases():
    fx = [e.prompt for e in tasks.get("finance_fx").examples(100)]
    cross = [p for p in fx if " USD to " not in p and " to USD " not in p]
    assert 20 < len(cross) < 80  # both cross rates and direct conversions, in both directions
    assert any(" USD to " in p for p in fx) and any(" to USD " in p for p in fx)
    compound = " ".join(e.prompt for e in tasks.get("finance_compound").examples(100))
    assert all(f"divided by {m}." in compound for m in (1, 2, 4, 12, 365))
    tax = [e.prompt.count("- above") for e in tasks.get("finance_tax").examples(100)]
    assert set(tax) == {3, 4, 5}


# -- extraction -------------------------------------------------------------------------------------------

PUBMEDQA_CASES = [
    (" yes", "yes"), (" Yes.", "yes"), (" NO", "no"), (" no, because the trial was small", "no"),
    (" Maybe\n\nExplanation: yes, partly", "maybe"),  # the first label of the answer segment
    ("The data suggest so.\nAnswer: No.", "no"),
    ("Answer: yes\nLet me reconsider.\nAnswer: maybe", "maybe"),  # the last "Answer:" wins
    ("answer : no", "no"), ("**Answer:** Yes", "yes"), ("Final answer: maybe", "maybe"),
    (" ma", None), (" Answer: ma", None), (" Answer:", None), ("", None), ("   \n", None), (None, None),
    (" I don't know", None), (" not enough evidence", None), (" nothing conclusive", None),
    (" It is unknown; nobody can say", None), (" Answer: yesterday", None), (" maybe-ish", "maybe"),
    ("Answer: yes\nAnswer: not sure", None),  # the last answer line holds no label
]


@pytest.mark.parametrize("text,want", PUBMEDQA_CASES, ids=[repr(c[0]) for c in PUBMEDQA_CASES])
def test_pubmedqa_extraction(text, want):
    assert tasks.get("pubmedqa").extract(text) == want


LEGAL_CASES = [
    ("legalbench_hearsay", " Yes", "yes"), ("legalbench_hearsay", " No.", "no"),
    ("legalbench_hearsay", " no,", "no"), ("legalbench_hearsay", " Not hearsay", None),
    ("legalbench_hearsay", " maybe", None),  # not a label of this task
    ("legalbench_hearsay", " Y", None), ("legalbench_hearsay", " Nope", None),
    ("legalbench_personal_jurisdiction", "Answer: YES, the defendant is domiciled there", "yes"),
    ("legalbench_personal_jurisdiction", " The court does not know; answer: no", "no"),
    ("legalbench_abercrombie", " Suggestive", "suggestive"),
    ("legalbench_abercrombie", " arbitrary or fanciful", "arbitrary"),
    ("legalbench_abercrombie", "Answer: The mark is descriptive.", "descriptive"),
    ("legalbench_abercrombie", " sugges", None), ("legalbench_abercrombie", " genericness", None),
    ("legalbench_abercrombie", " yes", None), ("legalbench_abercrombie", "", None),
]


@pytest.mark.parametrize("name,text,want", LEGAL_CASES, ids=[f"{c[0][11:]}-{c[1]!r}" for c in LEGAL_CASES])
def test_legal_extraction(name, text, want):
    assert tasks.get(name).extract(text) == want


FINANCE_CASES = [
    (" 1199.10", "1199.10"), (" $1,199.10", "1199.10"), (" 1199.1", "1199.10"), (" 1199.10.", "1199.10"),
    ("  $ 1,199.10  ", "1199.10"), (" 1199", "1199.00"), (" 1199.105", "1199.11"),  # quantized half up
    (" 1199.104", "1199.10"), (" .5", "0.50"), (" 1,234,567.891", "1234567.89"),
    (" 1199.10\n\nExplanation: M = P r (1 + r)^n / ((1 + r)^n - 1) with P = 200000", "1199.10"),
    ("The rate is 0.5% a month.\nAnswer: $1,199.10", "1199.10"),  # after the last "Answer:" only
    ("Answer: 5\nAnswer: 1199.10", "1199.10"), ("**Answer:** 1199.10", "1199.10"),
    (" The monthly payment is $1,199.10.", "1199.10"), ("- 1199.10", "1199.10"),  # a bullet, not a sign
    (" -5.00", "-5.00"), (" -$5", "-5.00"), (" -0.001", "0.00"),
    (" 12.3.4", None), (" 1,23", None), (" 12,5", None), (" 1,2345.00", None),  # malformed: no guessing
    ("", None), (None, None), (" about a thousand dollars", None), ("1199.10 Answer:", None),
    (" v2", None), (" $", None), (" .", None), (" 1" + "0" * 70, None),
]


@pytest.mark.parametrize("text,want", FINANCE_CASES, ids=[repr(c[0])[:40] for c in FINANCE_CASES])
def test_finance_extraction(text, want):
    for name in FINANCE:
        assert tasks.get(name).extract(text) == want


def test_gold_answers_are_fixed_points_of_extraction():
    for t in tasks.REGISTRY.values():
        for e in t.examples(50, seed=0):
            assert t.extract(e.gold) == e.gold
            assert t.extract(f" {e.gold}\n") == e.gold == t.extract(f"Answer: {e.gold}")
            assert t.is_correct(t.extract(f"Answer: {e.gold}"), e.gold)


def test_is_correct_is_exact_and_none_is_never_correct():
    pub, fx = tasks.get("pubmedqa"), tasks.get("finance_fx")
    assert pub.is_correct("yes", "yes") and not pub.is_correct("no", "yes") and not pub.is_correct(None, "yes")
    assert not fx.is_correct(None, "1.00") and not fx.is_correct("1.0", "1.00") and fx.is_correct("1.00", "1.00")


def test_extract_refuses_a_non_string():
    for name in ("pubmedqa", "finance_tax"):
        with pytest.raises(TypeError, match="str or None"):
            tasks.get(name).extract(b"yes")


def test_answer_segment_and_parse_amount():
    assert extract.answer_segment("a Answer: b ANSWER : c") == " c"
    assert extract.answer_segment("no marker") == "no marker"
    assert extract.parse_amount("$1,234.5") == D("1234.5") and extract.parse_amount("12.3.4") is None
    assert extract.to_cents(D("2.675")) == "2.68"  # half up, where float rounding gives 2.67


# -- selection and registry -------------------------------------------------------------------------------

def _names(ts):
    return [t.name for t in ts]


def test_select_by_name_domain_and_all():
    assert _names(tasks.select("pubmedqa")) == ["pubmedqa"]
    assert _names(tasks.select("law")) == list(COUNTS)[1:]
    assert _names(tasks.select("finance")) == FINANCE
    assert _names(tasks.select("medicine, finance_fx")) == ["pubmedqa", "finance_fx"]
    assert _names(tasks.select("all")) == list(tasks.REGISTRY)
    assert _names(tasks.select("law,legalbench_hearsay,law,")) == list(COUNTS)[1:]  # each task once


@pytest.mark.parametrize("spec", ["pubmedqa,nosuch", "Medicine", "physics"])
def test_select_unknown_names_the_known_tasks(spec):
    with pytest.raises(ValueError) as e:
        tasks.select(spec)
    msg = str(e.value)
    assert repr(spec.split(",")[-1]) in msg
    assert all(n in msg for n in tasks.REGISTRY) and "medicine" in msg and "'all'" in msg


@pytest.mark.parametrize("spec", ["", " , ", None])
def test_select_empty_is_refused(spec):
    with pytest.raises(ValueError, match="spec"):
        tasks.select(spec)


def test_get_unknown_names_the_known_tasks():
    with pytest.raises(ValueError, match=r"unknown task 'pubmed'.*known tasks: pubmedqa, legalbench_hearsay"):
        tasks.get("pubmed")


def test_register_refuses_duplicates_and_reserved_names(monkeypatch):
    monkeypatch.setattr(tasks, "REGISTRY", dict(tasks.REGISTRY))
    with pytest.raises(ValueError, match="already registered"):
        tasks.register(tasks.get("pubmedqa"))
    for name, domain in (("all", "user"), ("law", "user"), ("mine", "pubmedqa")):
        t = tasks.Task(name, domain, "d", 8, extract.extract_amount, generator=finance.tax_item)
        with pytest.raises(ValueError, match="reserved|task name"):
            tasks.register(t)
    with pytest.raises(TypeError, match="attribute"):
        tasks.register(object())


# -- users' JSONL tasks ---------------------------------------------------------------------------------

def _write(path, rows):
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows), encoding="utf-8")
    return path


def test_jsonl_task_with_choices(tmp_path, monkeypatch):
    p = _write(tmp_path / "contracts.jsonl", [
        {"id": "c1", "clause": "The seller may terminate at will.", "label": "Unfair"},
        "",  # blank lines are skipped
        {"id": "c2", "clause": "Either party may terminate with notice.", "label": "fair"},
    ])
    t = tasks.load_jsonl_task("contracts", str(p), template="Clause: {clause}\nFair or unfair?\nAnswer:",
                              answer_field="label", choices=["fair", "unfair"], domain="contracts",
                              max_new_tokens=8)
    ex = t.examples()
    assert [(e.task, e.id, e.gold) for e in ex] == [("contracts", "c1", "unfair"), ("contracts", "c2", "fair")]
    assert ex[0].prompt == "Clause: The seller may terminate at will.\nFair or unfair?\nAnswer:"
    assert t.domain == "contracts" and t.max_new_tokens == 8 and "contracts.jsonl" in t.description
    assert t.extract(" Unfair.") == "unfair" and t.extract(" fairly unfair") == "unfair"
    assert t.extract(" unfai") is None and t.extract(None) is None
    assert t.is_correct(t.extract("Answer: UNFAIR"), ex[0].gold)
    monkeypatch.setattr(tasks, "REGISTRY", dict(tasks.REGISTRY))
    tasks.register(t)
    assert _names(tasks.select("contracts")) == ["contracts"] and "contracts" in _names(tasks.select("all"))
    with pytest.raises(ValueError, match="already registered"):
        tasks.register(t)


def test_jsonl_task_with_pattern_and_line_ids(tmp_path):
    p = _write(tmp_path / "dose.jsonl", [{"drug": "A", "mg": 50}, {"drug": "B", "mg": "12.5"}])
    t = tasks.load_jsonl_task("dose", str(p), template="Dose of {drug} in mg?\nAnswer:", answer_field="mg",
                              id_field=None, pattern=r"(\d+(?:\.\d+)?)\s*mg")
    ex = t.examples()
    assert [(e.id, e.gold) for e in ex] == [("1", "50"), ("2", "12.5")] and t.domain == "user"
    assert t.extract(" 50 mg daily") == "50" and t.extract("Answer: 12.5mg") == "12.5"
    assert t.extract(" fifty mg") is None and t.extract("") is None
    assert t.examples(1, seed=0) == t.examples(1, seed=0) and len(t.examples(1, seed=0)) == 1


@pytest.mark.parametrize("rows,match", [
    ([{"id": 1, "q": "x", "answer": "yes"}, '{"id": 2, "q": "y", "answer": '], r"bad\.jsonl:2: invalid JSON"),
    ([{"id": 1, "q": "x", "answer": "yes"}, {"id": 2, "answer": "no"}], r"bad\.jsonl:2: missing field 'q'"),
    ([{"id": 1, "q": "x"}], r"bad\.jsonl:1: missing field 'answer'"),
    ([{"q": "x", "answer": "yes"}], r"bad\.jsonl:1: missing field 'id'"),
    ([{"id": 1, "q": "x", "answer": "yes"}, "", {"id": 1, "q": "y", "answer": "no"}],
     r"bad\.jsonl:3: id '1' already used on line 1"),
    ([{"id": 1, "q": "x", "answer": "perhaps"}], r"bad\.jsonl:1: answer 'perhaps' is not one of choices"),
    ([{"id": 1, "q": "x", "answer": "yes"}, "[1, 2]"], r"bad\.jsonl:2: a row must be a JSON object"),
    ([], r"bad\.jsonl: no rows"),
])
def test_jsonl_task_malformed_rows_name_the_file_and_line(tmp_path, rows, match):
    p = _write(tmp_path / "bad.jsonl", rows)
    with pytest.raises(ValueError, match=match):
        tasks.load_jsonl_task("bad", str(p), template="Q: {q}\nAnswer:", choices=["yes", "no"])


@pytest.mark.parametrize("kwargs,match", [
    ({"choices": ["yes"], "pattern": "(x)"}, "exactly one of choices and pattern"),
    ({}, "exactly one of choices and pattern"),
    ({"pattern": r"\d+"}, "exactly one group"),
    ({"pattern": "(unclosed"}, "not a valid regular expression"),
    ({"choices": []}, "choices must be"),
    ({"choices": ["Yes", "yes"]}, "distinct"),
])
def test_jsonl_task_bad_arguments(tmp_path, kwargs, match):
    p = _write(tmp_path / "ok.jsonl", [{"id": 1, "q": "x", "answer": "yes"}])
    with pytest.raises(ValueError, match=match):
        tasks.load_jsonl_task("ok", str(p), template="Q: {q}\nAnswer:", **kwargs)
