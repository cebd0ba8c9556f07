import pytest

from vpeft.config import RunConfig, TrainConfig, apply_overrides, field_docs, format_spec, parse_spec
from vpeft.errors import ConfigError
from vpeft.registry import METHODS, OBJECTIVES, SELECTORS, Registry

ALL_PLUGINS = [(r, n) for r in (METHODS, OBJECTIVES, SELECTORS) for n in r.names()]


def test_parse_spec_values():
    assert parse_spec("lora") == ("lora", {})
    name, kw = parse_spec("lora:rank=4,alpha=0.5,bias=true,targets=[q,v],act=gelu")
    assert name == "lora"
    assert kw == {"rank": 4, "alpha": 0.5, "bias": True, "targets": ["q", "v"], "act": "gelu"}
    assert parse_spec(format_spec("x", {"a": 1, "b": [1, 2], "c": False})) == ("x", {"a": 1, "b": [1, 2], "c": False})
    assert parse_spec("idat:teacher='vit_s:img_size=32,patch_size=8',alpha=2") == (
        "idat",
        {"teacher": "vit_s:img_size=32,patch_size=8", "alpha": 2},
    )


@pytest.mark.parametrize("bad", ["", ":rank=4", "lora:rank", "lora:=4"])
def test_parse_spec_rejects_malformed(bad):
    with pytest.raises(ConfigError):
        parse_spec(bad)


def test_unknown_method_suggests_close_names():
    with pytest.raises(ConfigError, match=r"unknown method 'bitfitt'.*'bitfit'.*Registered methods: .*full"):
        METHODS.build("bitfitt")


def test_unknown_key_names_key_and_valid_ones():
    with pytest.raises(ConfigError, match=r"objective 'ce' has no option 'smoothing'.*label_smoothing"):
        OBJECTIVES.build("ce:smoothing=0.1")


def test_invalid_values_name_the_field():
    with pytest.raises(ConfigError, match="'epochs'"):
        TrainConfig.from_dict({"epochs": "many"})
    with pytest.raises(ConfigError, match="'select'.*'last'"):
        TrainConfig.from_dict({"select": "best"})
    with pytest.raises(ConfigError, match="label_smoothing"):
        OBJECTIVES.build("ce:label_smoothing=1.5")
    with pytest.raises(ConfigError, match="batch_size"):
        TrainConfig.from_dict({"batch_size": 10, "grad_accum": 3})


def test_run_config_roundtrip_and_overrides():
    data = {"backbone": {"spec": "vit_tiny_patch16_224"}, "method": "bitfit", "train": {"epochs": 3}}
    data = apply_overrides(data, ["train.lr=0.01", "objective.name=ce", "objective.label_smoothing=0.1"])
    cfg = RunConfig.from_dict(data)
    assert cfg.train.lr == 0.01 and cfg.train.epochs == 3
    assert cfg.method.name == "bitfit" and cfg.objective.label_smoothing == 0.1
    again = RunConfig.from_dict(cfg.to_dict())
    assert again.to_dict() == cfg.to_dict()
    with pytest.raises(ConfigError, match="no section 'trian'.*'train'"):
        RunConfig.from_dict({"trian": {}})
    with pytest.raises(ConfigError, match="section 'train' has no option 'learning_rate'"):
        RunConfig.from_dict({"train": {"learning_rate": 1}})


def test_registry_rejects_duplicates_and_bad_names():
    reg = Registry("thing")

    @reg.register("a")
    class A:
        pass

    with pytest.raises(ValueError, match="already registered"):
        reg.register("a")(type("B", (), {}))
    with pytest.raises(ValueError):
        reg.register("Bad-Name")
    assert reg.names() == ["a"] and reg.names("b*") == []


@pytest.mark.parametrize("registry,name", ALL_PLUGINS, ids=[f"{r.kind}-{n}" for r, n in ALL_PLUGINS])
def test_every_plugin_documents_every_field(registry, name):
    cls = registry.get(name)
    assert cls.__doc__ and cls.__doc__.strip(), f"{name} has no docstring"
    docs = field_docs(cls)
    for f in cls.fields():
        assert docs.get(f.name), f"{registry.kind} {name}: field {f.name!r} is not documented in Args:"
    cfg = cls()  # defaults are valid
    assert registry.build({"name": name, **cfg.to_dict()}).to_dict() == cfg.to_dict()


@pytest.mark.parametrize("section", [RunConfig, TrainConfig])
def test_run_sections_document_every_field(section):
    from vpeft.config import BackboneConfig, DataConfig

    for cls in (section, BackboneConfig, DataConfig):
        docs = field_docs(cls)
        assert all(docs.get(f.name) for f in cls.fields()), cls.__name__


@pytest.mark.parametrize(
    "value, tp, want",
    [
        (3, float, 3.0),
        (3.0, int, 3),
        (1e3, int, 1000),
        ("4", int, 4),
        ("4.5", float, 4.5),
        (2, int, 2),
        (True, int, "expected an integer"),
        (True, float, "expected a number"),
        (3.5, int, "expected an integer"),
        ("x", float, "expected a number"),
        ("4.5", int, "expected an integer"),
    ],
)
def test_numbers_are_coerced_or_refused_by_name(value, tp, want):
    from vpeft.config import _coerce

    if isinstance(want, str):
        with pytest.raises(ConfigError, match=f"train.lr: {want}, got {value!r}"):
            _coerce(value, tp, "train.lr")
    else:
        got = _coerce(value, tp, "train.lr")
        assert got == want and type(got) is tp
