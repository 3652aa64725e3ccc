"""A Session resolves one model's inputs once, the same way for every analysis: the spec follows given
inputs, allow_nonfinite is honoured, and the module is built once and only when needed."""

from __future__ import annotations

import numpy as np
import pytest

from deployval.catalog.registry import resolve_model
from deployval.errors import UsageError
from deployval.model import inputs as inputs_mod
from deployval.model.arguments import parse_input_shape
from deployval.model.spec import RunConfig
from deployval.run.session import Session


def _spec():
    return resolve_model("dv_test_models:tiny_conv", input_shapes=[parse_input_shape("1x3x8x8")])


def test_random_inputs_are_seeded_and_digested():
    first, second = Session(_spec(), RunConfig(seed=3)), Session(_spec(), RunConfig(seed=3))
    assert first.seed == 3 and first.inputs_source == "random (seed 3)"
    assert first.inputs_digest == second.inputs_digest != Session(_spec(), RunConfig(seed=4)).inputs_digest
    (name,) = first.spec.input_names
    assert first.inputs_info()[0]["sha256"] == inputs_mod.digest({name: first.feeds[name]})


def test_given_inputs_set_the_shapes_and_nonfinite_needs_consent():
    spec = _spec()
    (name,) = spec.input_names
    feeds = {name: np.ones((2, 3, 6, 6), np.float32)}
    session = Session(spec, inputs=feeds)
    assert session.spec.inputs[0].shape == (2, 3, 6, 6) and session.inputs_source == "given" and session.seed is None
    feeds[name][0, 0, 0, 0] = np.nan
    with pytest.raises(UsageError):
        Session(spec, inputs=feeds)
    assert np.isnan(Session(spec, inputs=feeds, allow_nonfinite=True).feeds[name]).any()


def test_module_is_built_once_on_first_use():
    session = Session(_spec())
    assert session.parameters is None and "model_build_s" not in session.timings
    module = session.module()
    assert session.module() is module
    assert session.parameters == sum(p.numel() for p in module.parameters())
    digest = session.model_digest
    assert len(digest) == 64 and "model_digest_s" in session.timings
