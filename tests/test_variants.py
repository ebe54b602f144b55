"""One vocabulary of model variants: each task's model flag names variants of the grid's table,
and a run's label is the flag choice its model is."""

from __future__ import annotations

import dataclasses

import pytest

from gateloop.experiments import language_model as lm
from gateloop.experiments import memory_horizon as mh
from gateloop.experiments.variants import TASK_NAMES, VARIANTS, task_name, variant_model
from gateloop.models import GateLoopConfig, TransformerConfig


def test_every_task_choice_is_a_variant_and_labels_round_trip() -> None:
    for task, names in TASK_NAMES.items():
        assert set(names.values()) <= set(VARIANTS), task
    for variant in mh.VARIANTS:
        assert mh.preset("cpu", variant).variant == variant
    for model in lm.MODELS:
        assert lm.as_model(lm.PRESETS["cpu"], model).model_name == model


def test_task_choices_set_the_control_they_name_whatever_the_base() -> None:
    fixed_base = dataclasses.replace(mh.PRESETS["cpu"].model, data_controlled=False)
    run = dataclasses.replace(mh.PRESETS["cpu"], model=fixed_base)
    assert mh.with_variant(run, "data-controlled").model.data_controlled is True
    assert mh.with_variant(run, "fixed").model.data_controlled is False
    # the variant changes the control only: every other field is the base's
    changed = dataclasses.replace(mh.with_variant(run, "data-controlled").model, data_controlled=False)
    assert changed == fixed_base


def test_memory_horizon_and_lm_fixed_are_the_grids_fixed() -> None:
    base = GateLoopConfig(vocab_size=16, d_model=32, n_layer=2, n_head=32)
    assert mh.with_variant(
        dataclasses.replace(mh.PRESETS["cpu"], model=base), "fixed"
    ).model == variant_model(base, "fixed", mh.HEAD_DIM)
    assert task_name("lm", variant_model(base, "fixed", lm.HEAD_DIM)) == "gateloop-fixed"
    assert isinstance(variant_model(base, "transformer", lm.HEAD_DIM), TransformerConfig)


def test_transformer_of_an_odd_width_is_refused_by_name() -> None:
    base = GateLoopConfig(vocab_size=16, d_model=33, n_layer=1, n_head=33)
    with pytest.raises(ValueError, match=r"even d_model .* got d_model = 33"):
        variant_model(base, "transformer", 16)
