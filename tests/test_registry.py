"""One registration idiom: a decorator on what makes the item, in every registry."""
import ast
import dataclasses
from pathlib import Path

import pytest

from engine import backbones, buffers, datasets, methods, norms
from engine.errors import ConfigError
from engine.registry import Registry

ENGINE = Path(__file__).resolve().parents[1] / "engine"


def test_a_plain_registry_keeps_the_decorated_object_and_its_aliases():
    reg = Registry("thing")

    @reg.register("Alpha", "a")
    def make():
        return 1

    assert reg.get("alpha") is make and reg.get("A") is make and reg.names() == ["alpha"]
    with pytest.raises(KeyError, match="registered twice"):
        reg.register("a")(make)
    with pytest.raises(TypeError, match="takes no fields"):
        reg.register("beta", size=3)
    with pytest.raises(ConfigError, match="unknown thing 'gamma'; choose one of: alpha"):
        reg.get("gamma")


def test_a_record_registry_builds_its_entry_from_the_function_name_and_fields():
    reg = Registry("norm", entry=lambda make, name, **fields: (name, make, fields))

    @reg.register("cn", options={"groups": 8})
    def make_cn():
        return "layer"

    assert make_cn() == "layer"                      # the function itself is left as it was
    assert reg.get("CN") == ("cn", make_cn, {"options": {"groups": 8}})


def test_norms_and_datasets_register_through_the_decorator():
    cn = norms.REGISTRY.get("cn")
    assert cn.make.__name__ == "make_cn" and set(cn.options) == {"groups", "freeze_affine"}
    assert norms.REGISTRY.get("ln").needs_shapes and not norms.REGISTRY.get("bn").options
    for name in datasets.REGISTRY.names():
        spec = datasets.REGISTRY.get(name)
        assert spec.name == name and callable(spec.load)
    assert datasets.REGISTRY.get("seq-cifar100").n_tasks == 10
    assert datasets.REGISTRY.get("seq-miniimg").check.__name__ == "check_miniimg"


def _register_calls(tree):
    """(is a decorator, line) of every REGISTRY.register(...) call in a module."""
    decorators = {id(d) for node in ast.walk(tree) if isinstance(node, (ast.FunctionDef, ast.ClassDef))
                  for d in node.decorator_list}
    for node in ast.walk(tree):
        if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "register"
                and isinstance(node.func.value, ast.Name) and node.func.value.id == "REGISTRY"):
            yield id(node) in decorators, node.lineno


@pytest.mark.parametrize("package", [backbones, buffers, datasets, methods, norms],
                         ids=lambda p: p.__name__)
def test_every_registration_in_the_engine_is_a_decorator(package):
    folder = Path(package.__file__).parent
    calls = [(path.name, line, deco) for path in sorted(folder.glob("*.py"))
             for deco, line in _register_calls(ast.parse(path.read_text()))]
    assert calls, f"no registrations found in {folder}"
    assert [c for c in calls if not c[2]] == []


def test_each_registry_is_named_after_the_trial_field_it_fills():
    """One name per concept: the CL method is `method` (field, registry, flag dest), the layer
    `norm`; mammoth's flag `--model` is the one place the old name stays (engine/cli.py)."""
    from engine.cli import build_parser
    from engine.config import TrialConfig

    by_field = {f.name: f.metadata["flag"]["registry"] for f in dataclasses.fields(TrialConfig)
                if "registry" in f.metadata["flag"]}
    kinds = {r.REGISTRY.kind for r in (backbones, buffers, datasets, methods, norms)}
    assert all(name == kind for name, kind in by_field.items()) and set(by_field) == kinds
    assert {"method", "norm"} <= kinds and "model" not in {f.name for f in dataclasses.fields(TrialConfig)}
    args = build_parser().parse_args(["--model", "DER++"])
    assert args.method == "DER++" and not hasattr(args, "model")
