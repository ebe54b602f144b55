"""Issue 26 item 1: packed documents through the Hugging Face forward (both model classes) equal
each document run alone, in every form transformers sends them (cu_seqlens, cu_seq_lens_q/k,
document_ids, position_ids restarting at 0: DataCollatorWithFlattening with and without its
FlashAttention keywords), through Trainer too; a keyword the forward would not use is an error."""

from __future__ import annotations

import pytest
import torch

pytest.importorskip("transformers")

from transformers import DataCollatorWithFlattening

import gateloop.hf
from gateloop.models import GateLoopConfig, TransformerConfig

from helpers import assert_close

PAIRS = [
    pytest.param(
        GateLoopConfig, gateloop.hf.GateLoopHFConfig, gateloop.hf.GateLoopForCausalLM, id="gateloop"
    ),
    pytest.param(
        TransformerConfig,
        gateloop.hf.GateLoopTransformerHFConfig,
        gateloop.hf.GateLoopTransformerForCausalLM,
        id="transformer",
    ),
]
LENGTHS = (5, 7, 1, 4)  # awkward: a one-token document, odd lengths


def _model(config_cls, hf_config_cls, hf_cls) -> torch.nn.Module:
    torch.manual_seed(0)
    return hf_cls(hf_config_cls.from_native(config_cls.tiny())).to(torch.float64).eval()


def _documents() -> list[torch.Tensor]:
    generator = torch.Generator().manual_seed(1)
    return [torch.randint(0, 97, (n,), generator=generator) for n in LENGTHS]


def _alone(model, documents) -> torch.Tensor:
    """Each document through the forward by itself, logits concatenated: [1, sum(L), V]."""
    with torch.no_grad():
        return torch.cat([model(doc[None], use_cache=False).logits for doc in documents], dim=1)


def _packing_forms(documents) -> dict[str, dict[str, torch.Tensor]]:
    cu = torch.tensor([0, *torch.cumsum(torch.tensor(LENGTHS), 0).tolist()], dtype=torch.int32)
    positions = torch.cat([torch.arange(n) for n in LENGTHS])[None]  # (1, L)
    document_ids = torch.cat([torch.full((n,), i) for i, n in enumerate(LENGTHS)])[None]
    flash = {
        "cu_seq_lens_q": cu,
        "cu_seq_lens_k": cu,
        "max_length_q": max(LENGTHS),
        "max_length_k": max(LENGTHS),
    }
    return {
        "cu_seqlens": {"cu_seqlens": cu},
        "position_ids": {"position_ids": positions},
        "document_ids": {"document_ids": document_ids},
        "flash_kwargs": flash,
        "position_ids+flash_kwargs": {"position_ids": positions, **flash},
    }


@pytest.mark.parametrize(("config_cls", "hf_config_cls", "hf_cls"), PAIRS)
def test_every_packing_form_equals_the_documents_alone(config_cls, hf_config_cls, hf_cls) -> None:
    model = _model(config_cls, hf_config_cls, hf_cls)
    documents = _documents()
    expected = _alone(model, documents)
    packed = torch.cat(documents)[None]  # (1, L)
    with torch.no_grad():
        unpacked = model(packed).logits
        assert (unpacked - expected).abs().max() > 1e-3  # packing changes the result: the test can fail
        for name, form in _packing_forms(documents).items():
            assert_close(f"logits ({name})", expected, model(packed, **form).logits, 1e-10)


@pytest.mark.parametrize(("config_cls", "hf_config_cls", "hf_cls"), PAIRS)
def test_flattening_collator_loss_equals_the_documents_alone(config_cls, hf_config_cls, hf_cls) -> None:
    """DataCollatorWithFlattening's batch (labels -100 at each document's first token) through the
    forward: the loss is the token-weighted mean of each document's own loss."""
    model = _model(config_cls, hf_config_cls, hf_cls)
    documents = _documents()
    per_doc = []
    with torch.no_grad():
        for doc in documents:
            if len(doc) > 1:  # a one-token document predicts nothing
                per_doc.append((model(doc[None], labels=doc[None]).loss * (len(doc) - 1), len(doc) - 1))
    expected = sum(loss for loss, _ in per_doc) / sum(n for _, n in per_doc)
    features = [{"input_ids": doc.tolist()} for doc in documents]
    for flash in (False, True):
        batch = DataCollatorWithFlattening(return_flash_attn_kwargs=flash)(features)
        with torch.no_grad():
            loss = model(**batch).loss
        assert_close(f"loss (flash kwargs {flash})", expected, loss, 1e-6)


def test_trainer_with_the_flattening_collator_resets_at_documents(tmp_path) -> None:
    """transformers' Trainer, padding-free: its first step's loss is the documents' own."""
    pytest.importorskip("accelerate")
    from transformers import Trainer, TrainingArguments

    model = _model(GateLoopConfig, gateloop.hf.GateLoopHFConfig, gateloop.hf.GateLoopForCausalLM).float()
    documents = _documents()
    with torch.no_grad():
        expected = sum(
            model(d[None], labels=d[None]).loss * (len(d) - 1) for d in documents if len(d) > 1
        ) / sum(len(d) - 1 for d in documents)
    args = TrainingArguments(
        output_dir=str(tmp_path), per_device_train_batch_size=len(documents), max_steps=1, learning_rate=0.0,
        logging_steps=1, report_to=[], use_cpu=True, save_strategy="no", disable_tqdm=True,
    )  # fmt: skip
    trainer = Trainer(
        model=model,
        args=args,
        train_dataset=[{"input_ids": d.tolist()} for d in documents],
        data_collator=DataCollatorWithFlattening(return_flash_attn_kwargs=True),
    )
    trainer.train()
    logged = next(row["loss"] for row in trainer.state.log_history if "loss" in row)
    assert abs(logged - expected.item()) < 1e-4, (logged, expected.item())


@pytest.mark.parametrize(("config_cls", "hf_config_cls", "hf_cls"), PAIRS)
def test_unused_and_contradictory_keywords_are_refused(config_cls, hf_config_cls, hf_cls) -> None:
    model = _model(config_cls, hf_config_cls, hf_cls)
    ids = torch.randint(0, 97, (1, 8))
    with pytest.raises(TypeError, match="does not use: token_type_ids"):
        model(ids, token_type_ids=torch.zeros_like(ids))
    with pytest.raises(TypeError, match="does not use: flash_window"):
        model(ids, flash_window=3)
    cu = torch.tensor([0, 3, 8], dtype=torch.int32)
    with pytest.raises(ValueError, match="position_ids restart at 0 in other places"):
        model(ids, cu_seq_lens_q=cu, position_ids=torch.tensor([[0, 1, 2, 3, 0, 1, 2, 3]]))
    with pytest.raises(ValueError, match="cu_seq_lens_k must equal cu_seq_lens_q"):
        model(ids, cu_seq_lens_q=cu, cu_seq_lens_k=torch.tensor([0, 4, 8], dtype=torch.int32))
    with pytest.raises(ValueError, match="cannot continue from or return a cache"):
        model(ids, cu_seqlens=cu, use_cache=True)
    with pytest.raises(TypeError, match="position_ids must be an integer tensor"):
        model(ids, position_ids=torch.zeros(1, 8))
    # positions that only count up mark nothing: the plain forward, and no cache is refused
    plain = model(ids).logits
    assert_close(
        "logits (counting positions)", plain, model(ids, position_ids=torch.arange(8)[None]).logits, 0
    )
