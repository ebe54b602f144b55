"""LM data pipeline: corpora readers, tokenizers, shards + meta.json, clear errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from gateloop.cli import main
from gateloop.data.corpora import read_text, read_wikitext103, split_documents, strip_brown_tags
from gateloop.data.prepare import prepare
from gateloop.data.tokenizers import BPETokenizer, ByteTokenizer, GPT2Tokenizer
from gateloop.data.tokens import TokenDataset

SOTU = Path(__file__).parent / "data" / "sotu"


def all_documents(corpus) -> list[str]:
    return [doc for split in corpus.splits.values() for doc in split]


def test_split_is_deterministic_and_complete() -> None:
    docs = [f"document number {i}" for i in range(300)]
    a, b = split_documents(docs), split_documents(list(reversed(docs)))
    assert {k: sorted(v) for k, v in a.items()} == {k: sorted(v) for k, v in b.items()}
    assert sorted(a["train"] + a["val"] + a["test"]) == sorted(docs)
    few = split_documents(["one", "two", "three"])
    assert all(few[s] for s in ("train", "val", "test"))


def test_read_text_directory_and_file(tmp_path) -> None:
    corpus = read_text(SOTU)
    assert sum(len(v) for v in corpus.splits.values()) == 24 and len(corpus.sources) == 24
    file = tmp_path / "book.txt"
    file.write_text("First paragraph.\n\nSecond one.\n\n\nThird.\n")
    assert sorted(all_documents(read_text(file))) == ["First paragraph.", "Second one.", "Third."]
    with pytest.raises(FileNotFoundError, match="neither a file nor a directory"):
        read_text(tmp_path / "missing")


def test_wikitext_raw_reader(tmp_path) -> None:
    article = " = Valkyria = \n \n Some text here . \n \n = = Section = = \n More text . \n"
    for name in ("wiki.train.raw", "wiki.valid.raw", "wiki.test.raw"):
        (tmp_path / name).write_text(article + article.replace("Valkyria", "Other"))
    corpus = read_wikitext103(tmp_path)
    assert len(corpus.splits["train"]) == 2  # split at top-level headings, not at = = sections
    assert corpus.splits["val"][1].startswith(" = Other = ")
    with pytest.raises(FileNotFoundError, match=r"wiki\.train\.raw, wiki\.valid\.raw, wiki\.test\.raw"):
        read_wikitext103(tmp_path / "nothing")


def test_brown_tags() -> None:
    assert strip_brown_tags("\tThe/at jury/nn said/vbd ``/`` no/at evidence/nn ''/'' ./.") == (
        'The jury said "no evidence".'
    )


def test_byte_and_bpe_tokenizers() -> None:
    text = "Fellow-Citizens of the Senate — ünïcode"
    tok = ByteTokenizer()
    assert tok.decode(tok.encode(text)) == text and tok.vocab_size == 257
    docs = all_documents(read_text(SOTU))
    bpe = BPETokenizer.train(docs, 600)
    assert bpe.vocab_size == 600 and bpe.decode(bpe.encode(text)) == text
    assert len(bpe.encode(docs[0])) < len(tok.encode(docs[0])) / 2  # it learned merges
    assert BPETokenizer.from_json(bpe.to_json()).encode(text) == bpe.encode(text)


def _gpt2_or_skip() -> GPT2Tokenizer:
    try:
        return GPT2Tokenizer()
    except (RuntimeError, FileNotFoundError) as exc:  # no registry access to fetch the ranks file
        pytest.skip(f"GPT-2 ranks unavailable: {exc}")


def test_gpt2_tokenizer() -> None:
    tok = _gpt2_or_skip()
    assert tok.encode("Hello world") == [15496, 995] and tok.eot_id == 50256
    assert tok.decode(tok.encode("The Senate, in 1790.")) == "The Senate, in 1790."


def test_gpt2_spec_carries_the_ranks_file_to_workers(monkeypatch) -> None:
    """A GPT-2 tokenizer built from a local ranks file rebuilds from its spec() with that file (the
    tokenising worker processes rebuild it so); meta.json keeps no machine-local path."""
    import gateloop.data.prepare as prep
    import gateloop.data.tokenizers as toks

    tok = object.__new__(GPT2Tokenizer)  # what __init__ leaves after loading a local ranks file
    tok.ranks_path = "/somewhere/gpt2.tiktoken"
    rebuilt: list[str | None] = []

    class Recorder:
        def __init__(self, ranks_path=None, *, try_hub=True) -> None:
            rebuilt.append(ranks_path)

    monkeypatch.setattr(toks, "GPT2Tokenizer", Recorder)
    prep._init_worker(tok.spec(), None)  # the worker initialiser of `data prepare`
    assert rebuilt == ["/somewhere/gpt2.tiktoken"]
    assert "ranks_path" not in toks.portable_spec(tok.spec())


def test_prepare_gpt2_ranks_reaches_the_workers(tmp_path, monkeypatch) -> None:
    """`data prepare --gpt2-ranks FILE` with worker processes: each worker loads FILE (a stand-in
    tokenizer that fails as an offline hub would when it gets no ranks file)."""
    import gateloop.data.prepare as prep
    import gateloop.data.tokenizers as toks

    class OfflineGPT2(ByteTokenizer):
        name = "gpt2"

        def __init__(self, ranks_path=None, *, try_hub=True) -> None:
            if ranks_path is None:
                raise RuntimeError("no ranks file given: would try the (unreachable) hub")
            self.ranks_path = ranks_path

        spec = GPT2Tokenizer.spec

    monkeypatch.setattr(prep, "GPT2Tokenizer", OfflineGPT2)
    monkeypatch.setattr(toks, "GPT2Tokenizer", OfflineGPT2)  # what forked workers' load_tokenizer builds
    monkeypatch.setattr(prep, "_batches", lambda docs: [[d] for d in docs])  # several batches: workers run
    ranks = "/local/gpt2.tiktoken"
    meta = prepare("text", tmp_path / "ds", path=SOTU, tokenizer_name="gpt2", gpt2_ranks=ranks, workers=2,
                   progress=False)  # fmt: skip
    assert meta["splits"]["train"]["tokens"] > 0
    assert meta["tokenizer"] == {"name": "gpt2", "vocab_size": 257, "eot_id": 256}  # no local path


@pytest.mark.parametrize("tokenizer", ["bytes", "bpe"])
def test_prepare_writes_shards_and_meta(tmp_path, tokenizer: str) -> None:
    meta = prepare("text", tmp_path / "ds", path=SOTU, tokenizer_name=tokenizer, vocab_size=500, workers=2,
                   progress=False)  # fmt: skip
    data = TokenDataset(tmp_path / "ds", verify_hashes=True)
    tok = data.tokenizer()
    for split in ("train", "val", "test"):
        tokens = data[split]
        assert len(tokens) == meta["splits"][split]["tokens"] > 0
        assert tokens.dtype == np.uint16 and tokens[-1] == tok.eot_id
        assert int((tokens == tok.eot_id).sum()) == meta["splits"][split]["documents"]
    first_doc = data["train"][: int(np.argmax(data["train"] == tok.eot_id))]
    assert tok.decode(first_doc.tolist()) in all_documents(read_text(SOTU))
    assert len(meta["sources"]) == 24


def test_prepare_gpt2_cli(tmp_path, capsys) -> None:
    _gpt2_or_skip()
    assert main(["data", "prepare", "--corpus", "text", "--path", str(SOTU), "--out", str(tmp_path / "ds"),
                 "--no-progress"]) == 0  # fmt: skip
    meta = json.loads((tmp_path / "ds" / "meta.json").read_text())
    assert meta["tokenizer"] == {"name": "gpt2", "vocab_size": 50257, "eot_id": 50256}
    assert "train:" in capsys.readouterr().out


def test_interrupted_prepare_is_not_a_dataset(tmp_path, monkeypatch) -> None:
    """Interrupted mid-way, a prepare into a new directory leaves no dataset there, and one over an
    existing dataset leaves that one as it was (the new one is swapped in only when complete)."""
    import gateloop.data.prepare as prep

    original = prep._append
    calls = {"n": 0}

    def crash(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt("killed while writing")
        return original(*args, **kwargs)

    prepare("text", tmp_path / "ds", path=SOTU, tokenizer_name="bytes", workers=1, progress=False)
    meta = (tmp_path / "ds" / "meta.json").read_text()
    monkeypatch.setattr(prep, "_append", crash)
    monkeypatch.setattr(prep, "_batches", lambda docs: [[d] for d in docs])  # one write per document
    for out in (tmp_path / "ds", tmp_path / "new"):
        calls["n"] = 0
        with pytest.raises(KeyboardInterrupt):
            prepare("text", out, path=SOTU, tokenizer_name="bytes", workers=1, progress=False)
    assert (tmp_path / "ds" / "meta.json").read_text() == meta
    TokenDataset(tmp_path / "ds", verify_hashes=True)
    with pytest.raises(FileNotFoundError, match="is not a complete dataset"):
        TokenDataset(tmp_path / "new")


def test_corrupt_shard_is_named(tmp_path) -> None:
    prepare("text", tmp_path / "ds", path=SOTU, tokenizer_name="bytes", workers=1, progress=False)
    with open(tmp_path / "ds" / "val.bin", "ab") as f:
        f.write(b"\x00\x00")
    with pytest.raises(ValueError, match=r"shard .*val\.bin has .* bytes, meta\.json expects"):
        TokenDataset(tmp_path / "ds")
    (tmp_path / "ds" / "test.bin").unlink()
    with pytest.raises((FileNotFoundError, ValueError), match=r"(test\.bin is missing|val\.bin)"):
        TokenDataset(tmp_path / "ds")
