"""MCR-Bench's tasks: fixed prompts, gold answers and answer extraction, in medicine, law and finance.

A task turns into a list of ``Example`` (prompt, gold) that is the same for the same (n, seed) on every
machine, so two runs differ only by the engine that served them. Built-in tasks are registered at import:
PubMedQA and three LegalBench tasks from the JSONL files in ``data/`` (see data/README.md for sources and
licences), and four finance tasks generated with exact answers (finance.py). ``load_jsonl_task`` adds a
user's task from a JSONL file. Prompts are plain completions (no chat template) ending in "Answer:".
"""

from __future__ import annotations

import functools
import hashlib
import json
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from bench.mcr import finance
from bench.mcr.extract import extract_amount, label_extractor, normalize_label, pattern_extractor

DATA = Path(__file__).parent / "data"
DOMAINS = ("medicine", "law", "finance")
FINANCE_DEFAULT_N = 100

YES_NO = ("yes", "no")
PUBMEDQA_LABELS = ("yes", "no", "maybe")
ABERCROMBIE_LABELS = ("generic", "descriptive", "suggestive", "arbitrary", "fanciful")


@dataclass(frozen=True)
class Example:
    task: str  # task name
    id: str  # unique within its task, stable across runs
    prompt: str  # the full prompt text sent to the model (plain completion prompt, no chat template)
    gold: str  # canonical gold answer, normalized the same way the task's extract() normalizes


def _check_n_seed(n, seed) -> None:
    if n is not None and (isinstance(n, bool) or not isinstance(n, int) or n < 0):
        raise ValueError(f"n must be None or an int >= 0, got {n!r}")
    # Random(-s) is Random(s): a negative seed would repeat another seed's items under other ids
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ValueError(f"seed must be an int >= 0, got {seed!r}")


@dataclass(frozen=True, eq=False)
class Task:
    """A named set of examples with its answer extraction.

    Exactly one of ``loader`` (a fixed set: every example, in file order) and ``generator`` (one fresh
    (prompt, gold) drawn from the rng, for generated tasks of any size) is given.
    """

    name: str
    domain: str  # "medicine" | "law" | "finance" | a user's domain
    description: str
    max_new_tokens: int  # enough for the answer format
    extractor: Callable[[str | None], str | None] = field(repr=False)
    loader: Callable[[], Sequence[Example]] | None = field(default=None, repr=False)
    generator: Callable[[random.Random], tuple[str, str]] | None = field(default=None, repr=False)
    default_n: int = FINANCE_DEFAULT_N  # generated tasks only: examples() with n=None

    def __post_init__(self):
        if not isinstance(self.name, str) or not self.name or "," in self.name or self.name != self.name.strip():
            raise ValueError(f"name must be a non-empty str without commas or outer spaces, got {self.name!r}")
        if not isinstance(self.domain, str) or not self.domain or "," in self.domain:
            raise ValueError(f"domain must be a non-empty str without commas, got {self.domain!r}")
        if isinstance(self.max_new_tokens, bool) or not isinstance(self.max_new_tokens, int) or self.max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be an int >= 1, got {self.max_new_tokens!r}")
        if (self.loader is None) == (self.generator is None):
            raise ValueError(f"task {self.name!r}: give exactly one of loader and generator")

    def examples(self, n: int | None = None, seed: int = 0) -> list[Example]:
        """The task's examples, the same for the same (n, seed).

        A fixed set gives all of its examples for n=None, else a seeded sample of min(n, size) of them in
        file order; a larger n's sample contains a smaller one's. A generated task gives n (default
        ``default_n``) items drawn in sequence, so a smaller n gives a prefix of a larger one.
        """
        _check_n_seed(n, seed)
        if self.loader is not None:
            rows = list(self.loader())
            if n is None or n >= len(rows):
                return rows
            order = list(range(len(rows)))
            random.Random(seed).shuffle(order)
            return [rows[i] for i in sorted(order[:n])]
        rng = random.Random(seed)
        count = self.default_n if n is None else n
        return [Example(self.name, f"s{seed}-{i:04d}", *self.generator(rng)) for i in range(count)]

    def extract(self, text: str | None) -> str | None:
        """The normalized answer in a model's output, or None when it holds no valid answer."""
        return self.extractor(text)

    def is_correct(self, answer: str | None, gold: str) -> bool:
        return answer is not None and answer == gold


# -- registry ---------------------------------------------------------------------------------------------

REGISTRY: dict[str, Task] = {}


def _known() -> str:
    domains = sorted({*DOMAINS, *(t.domain for t in REGISTRY.values())})
    return f"known tasks: {', '.join(REGISTRY) or '(none)'}; domains: {', '.join(domains)}; or 'all'"


def register(task) -> None:
    """Add ``task`` to REGISTRY; a duplicate name, or a name that select() would read as a domain, is refused."""
    for attr in ("name", "domain", "max_new_tokens", "examples", "extract", "is_correct"):
        if not hasattr(task, attr):
            raise TypeError(f"task must have a {attr!r} attribute like bench.mcr.tasks.Task, got {task!r}")
    if task.name in REGISTRY:
        raise ValueError(f"task {task.name!r} is already registered")
    domains = {*DOMAINS, *(t.domain for t in REGISTRY.values())}
    if task.name == "all" or task.name in domains:
        raise ValueError(f"task name {task.name!r} is reserved ('all' or a domain name)")
    if task.domain == "all" or task.domain in REGISTRY:
        raise ValueError(f"domain {task.domain!r} of task {task.name!r} is 'all' or a task name")
    REGISTRY[task.name] = task


def get(name: str) -> Task:
    if name not in REGISTRY:
        raise ValueError(f"unknown task {name!r}; {_known()}")
    return REGISTRY[name]


def select(spec: str) -> list[Task]:
    """Tasks named by ``spec``: comma-separated task names, domains or "all"; in registry order within a
    domain, each task once."""
    if not isinstance(spec, str) or not spec.strip(" ,"):
        raise ValueError(f"spec must name tasks, domains or 'all', got {spec!r}")
    chosen: dict[str, Task] = {}
    for part in (p.strip() for p in spec.split(",")):
        if not part:
            continue
        if part == "all":
            picked = list(REGISTRY.values())
        elif part in REGISTRY:
            picked = [REGISTRY[part]]
        else:
            picked = [t for t in REGISTRY.values() if t.domain == part]
            if not picked:
                raise ValueError(f"unknown task or domain {part!r} in spec {spec!r}; {_known()}")
        for t in picked:
            chosen.setdefault(t.name, t)
    return list(chosen.values())


# -- JSONL ------------------------------------------------------------------------------------------------

def _rows(path) -> list[tuple[int, dict]]:
    """(1-based line number, row) for every non-blank line; ValueError naming file and line on bad JSON."""
    out = []
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise ValueError(f"{path}:{lineno}: invalid JSON: {e.msg} (column {e.colno})") from None
            if not isinstance(row, dict):
                raise ValueError(f"{path}:{lineno}: a row must be a JSON object, got {type(row).__name__}")
            out.append((lineno, row))
    if not out:
        raise ValueError(f"{path}: no rows")
    return out


def _field(row: dict, key: str, path, lineno: int):
    if key not in row:
        raise ValueError(f"{path}:{lineno}: missing field {key!r} (row has {', '.join(map(repr, row)) or 'none'})")
    return row[key]


def _format(template: str, row: dict, path, lineno: int) -> str:
    try:
        return template.format(**row)
    except KeyError as e:
        raise ValueError(f"{path}:{lineno}: missing field {e.args[0]!r} used by the template "
                         f"(row has {', '.join(map(repr, row)) or 'none'})") from None
    except (IndexError, ValueError, AttributeError, TypeError) as e:
        raise ValueError(f"{path}:{lineno}: template cannot format this row: {e}") from None


def load_jsonl_task(name: str, path: str, *, template: str, answer_field: str = "answer", id_field: str | None = "id",
                    choices: list[str] | None = None, pattern: str | None = None, domain: str = "user",
                    max_new_tokens: int = 32, description: str = "") -> Task:
    """A user's task from a JSONL file, read and checked now (register() it to select it by name).

    Each row's prompt is ``template.format(**row)``, its gold ``row[answer_field]`` and its id
    ``row[id_field]`` (the 1-based line number if id_field is None). The answer is the first of ``choices``
    (case-insensitive, whole words, spelled as in ``choices``) or group 1 of the regex ``pattern`` in the
    text after the last "Answer:"; exactly one of the two. A malformed row raises ValueError naming the
    file and its line.
    """
    if (choices is None) == (pattern is None):
        raise ValueError(f"task {name!r}: give exactly one of choices and pattern")
    if not isinstance(template, str) or not template:
        raise ValueError(f"template must be a non-empty str, got {template!r}")
    if choices is not None:
        if isinstance(choices, str) or not choices or not all(isinstance(c, str) and c.strip() for c in choices):
            raise ValueError(f"choices must be a non-empty list of non-empty str, got {choices!r}")
        choices = [c.strip() for c in choices]
        extractor = label_extractor(choices)
    else:
        extractor = pattern_extractor(pattern)
    examples, seen = [], {}
    for lineno, row in _rows(path):
        prompt = _format(template, row, path, lineno)
        raw = _field(row, answer_field, path, lineno)
        if isinstance(raw, bool) or not isinstance(raw, (str, int, float)):
            raise ValueError(f"{path}:{lineno}: answer field {answer_field!r} must be a string or number, got {raw!r}")
        if choices is not None:
            gold = normalize_label(raw, choices)
            if gold is None:
                raise ValueError(f"{path}:{lineno}: answer {raw!r} is not one of choices {choices}")
        else:
            gold = str(raw).strip()
            if not gold:
                raise ValueError(f"{path}:{lineno}: answer field {answer_field!r} is empty")
        ex_id = str(lineno) if id_field is None else str(_field(row, id_field, path, lineno))
        if ex_id in seen:
            raise ValueError(f"{path}:{lineno}: id {ex_id!r} already used on line {seen[ex_id]}")
        seen[ex_id] = lineno
        examples.append(Example(name, ex_id, prompt, gold))
    fixed = tuple(examples)
    return Task(name, domain, description or f"user task from {path}", max_new_tokens, extractor,
                loader=lambda: fixed)


# -- built-in tasks ---------------------------------------------------------------------------------------

_ANSWER_LINE = 'Answer with exactly one of {options}, on a line starting with "Answer:".'

PUBMEDQA_TEMPLATE = ("Answer the research question using the abstract below. "
                     + _ANSWER_LINE.format(options="yes, no or maybe")
                     + "\n\nAbstract: {context}\n\nQuestion: {question}\nAnswer:")

# LegalBench task -> (background, question, labels, options as written in the prompt, what the text is)
LEGAL = {
    "hearsay": (
        "Hearsay is an out-of-court statement offered to prove the truth of the matter it asserts.",
        "Is the evidence hearsay?", YES_NO, "Yes or No", "Evidence"),
    "personal_jurisdiction": (
        "A court has personal jurisdiction over a defendant who is domiciled in the forum state, or who has "
        "sufficient contacts with the forum state when the claim arises out of those contacts.",
        "Does the court have personal jurisdiction over the defendant?", YES_NO, "Yes or No", "Facts"),
    "abercrombie": (
        "The Abercrombie spectrum classifies a trademark by its distinctiveness: generic (the common name of the "
        "product), descriptive (describes a quality or feature of the product), suggestive (hints at the product "
        "but takes imagination to connect), arbitrary (a real word unrelated to the product) or fanciful (an "
        "invented word).",
        "Classify the mark into one of the five Abercrombie categories.", ABERCROMBIE_LABELS,
        "generic, descriptive, suggestive, arbitrary or fanciful", "Mark"),
}


def legal_prompt(task: str, text: str) -> str:
    background, question, _, options, what = LEGAL[task]
    return f"{background} {question} {_ANSWER_LINE.format(options=options)}\n\n{what}: {text.strip()}\nAnswer:"


def _gold(raw, labels, path, lineno) -> str:
    gold = normalize_label(raw, labels)
    if gold is None:
        raise ValueError(f"{path}:{lineno}: answer {raw!r} is not one of {', '.join(labels)}")
    return gold


@functools.cache
def _pubmedqa() -> tuple[Example, ...]:
    path = DATA / "pubmedqa.jsonl"
    out = []
    for lineno, row in _rows(path):
        prompt = _format(PUBMEDQA_TEMPLATE, row, path, lineno)
        gold = _gold(_field(row, "answer", path, lineno), PUBMEDQA_LABELS, path, lineno)
        out.append(Example("pubmedqa", str(_field(row, "id", path, lineno)), prompt, gold))
    return tuple(out)


@functools.cache
def _legalbench(task: str) -> tuple[Example, ...]:
    path = DATA / "legalbench.jsonl"
    out = []
    for lineno, row in _rows(path):
        if _field(row, "task", path, lineno) != task:
            continue
        inp = _field(row, "input", path, lineno)
        text = _field(inp, "text", path, lineno) if isinstance(inp, dict) else None
        if not isinstance(text, str):
            raise ValueError(f"{path}:{lineno}: input.text must be a string")
        gold = _gold(_field(row, "answer", path, lineno), LEGAL[task][2], path, lineno)
        # LegalBench rows carry no id; a hash of the text stays the same if the file is reordered or extended
        ex_id = hashlib.sha256(text.encode("utf-8")).hexdigest()[:12]
        out.append(Example(f"legalbench_{task}", ex_id, legal_prompt(task, text), gold))
    return tuple(out)


def _builtins() -> list[Task]:
    out = [Task("pubmedqa", "medicine", "PubMedQA expert-labelled: answer a research question from its abstract "
                "(yes/no/maybe)", 16, label_extractor(PUBMEDQA_LABELS), loader=_pubmedqa)]
    for task, desc in (("hearsay", "LegalBench hearsay: is the evidence hearsay (yes/no)"),
                       ("personal_jurisdiction", "LegalBench personal jurisdiction: does the court have it (yes/no)"),
                       ("abercrombie", "LegalBench abercrombie: a mark's category on the Abercrombie spectrum")):
        out.append(Task(f"legalbench_{task}", "law", desc, 16, label_extractor(LEGAL[task][2]),
                        loader=functools.partial(_legalbench, task)))
    for name, (desc, gen) in finance.ITEMS.items():
        out.append(Task(name, "finance", desc, 24, extract_amount, generator=gen))
    return out


for _t in _builtins():
    register(_t)
