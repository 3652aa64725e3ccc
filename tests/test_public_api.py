"""The public names resolve where users and plugins import them from, whatever folder the code behind
them lives in: the package's lazy attributes, `deployval.api`, `deployval.mark` and the debug package,
what backend plugins import from `deployval.backends.base`, the built-in backends and zoo factories
named by string, the modules run with `python -m`, and the pyproject entry points."""

from __future__ import annotations

import importlib
import importlib.metadata
import importlib.util
import inspect

import pytest

import deployval

PLUGIN_NAMES = ("Runner", "register_backend", "get_backend", "check_available", "backend_entries", "Artifact",
                "ARTIFACT_KINDS", "MODULE", "TORCHSCRIPT", "ONNX_RAW", "ONNX", "ONNX_INT32", "ONNX_FP16", "ONNX_INT8",
                "ONNX_FP16_INT32", "ONNX_INT8_INT32", "ENTRY_POINT_GROUP", "BUILTIN_BACKENDS")

# Module paths the documentation and the Python API section name.
DOCUMENTED = ("deployval.precision.sensitivity:analyze", "deployval.precision.synthetic:write_organ_volumes",
              "deployval.catalog.registry:resolve_model", "deployval.model.arguments:InputShapeArg",
              "deployval.model.spec:RunConfig", "deployval.catalog.zoo.hyperprior:build_without_medians")


def _resolve(target: str) -> object:
    module_name, _, attr = target.partition(":")
    value: object = importlib.import_module(module_name)
    for part in attr.split(".") if attr else ():
        value = getattr(value, part)
    return value


@pytest.mark.parametrize("name", deployval.__all__)
def test_each_package_attribute_resolves(name):
    assert getattr(deployval, name) is not None


def test_the_api_functions_resolve():
    from deployval import api

    public = {name for name, value in vars(api).items()
              if inspect.isfunction(value) and value.__module__ == api.__name__ and not name.startswith("_")}
    assert {"compare", "validate", "export_artifacts"} <= public
    for name in public:
        assert callable(getattr(api, name))
    assert deployval.compare is api.compare and deployval.validate is api.validate
    assert deployval.export_artifacts is api.export_artifacts


def test_mark_and_the_debug_package_resolve():
    import deployval.debug as debug

    assert callable(deployval.mark) and deployval.mark is debug.mark
    for name in debug.__all__:
        assert getattr(debug, name) is not None
    sentinel = object()
    assert deployval.mark(sentinel, "x") is sentinel  # outside a debug run it does nothing


@pytest.mark.parametrize("name", PLUGIN_NAMES)
def test_what_plugins_import_from_backends_base(name):
    base = importlib.import_module("deployval.backends.base")
    assert getattr(base, name) is not None


def test_the_artifact_kinds_are_the_vocabulary():
    from deployval.backends.base import ARTIFACT_KINDS, MODULE, ONNX, ONNX_FP16, ONNX_INT8, ONNX_RAW, TORCHSCRIPT

    assert {MODULE, TORCHSCRIPT, ONNX_RAW, ONNX, ONNX_FP16, ONNX_INT8} <= set(ARTIFACT_KINDS)


def test_the_builtin_backends_resolve():
    from deployval.backends.base import BUILTIN_BACKENDS, Runner

    for target in BUILTIN_BACKENDS.values():
        assert issubclass(_resolve(target), Runner), target  # type: ignore[arg-type]


def test_the_zoo_factories_resolve():
    from deployval.catalog.zoo import ZOO

    for spec in ZOO.values():
        for target in (spec.factory, spec.checkpoint_loader):
            if isinstance(target, str):
                assert callable(_resolve(target)), target


@pytest.mark.parametrize("target", DOCUMENTED)
def test_documented_module_paths_resolve(target):
    assert _resolve(target) is not None


@pytest.mark.parametrize("module", ["deployval", "deployval.debug", "deployval.run.isolation"])
def test_modules_run_with_python_m_exist(module):
    spec = importlib.util.find_spec(module)
    assert spec is not None and (spec.submodule_search_locations is None
                                 or importlib.util.find_spec(f"{module}.__main__") is not None)


def test_the_entry_points_resolve():
    points = list(importlib.metadata.distribution("deployval").entry_points)
    assert any(p.group == "console_scripts" and p.name == "deployval" for p in points)
    for point in points:
        assert callable(point.load()), point
