"""The Registry IR: immutable, picklable, shared while used and freed after; Text locales."""

from __future__ import annotations

import dataclasses
import gc
import pickle
import weakref
from collections.abc import Mapping
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from conftest import write_files
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from metacrm.metadata.compiler import Compiler
from metacrm.metadata.formula import Formula
from metacrm.metadata.ir import ANY_LOCALE, FrozenDict, Registry, Text
from metacrm.metadata.library import Library


def make_library(root: Path, files: Mapping[str, str]) -> Library:
    """Write `{relative path: YAML}` below `root` (dedented) and return the library there."""
    write_files(root, files)
    return Library.at(root)


@pytest.fixture
def acme(project_compiler: Compiler) -> Registry:
    result = project_compiler.compile_tenant("acme")
    assert result.registry is not None, [d.format() for d in result.diagnostics]
    return result.registry


# -- immutability ------------------------------------------------------------------------------

def test_registry_objects_refuse_assignment(acme: Registry) -> None:
    scope = acme.scope("retail")
    entity = scope.entities["customer.customer"]
    field = entity.field("kind")
    targets = [(acme, "version"), (acme, "entities"), (scope, "entities"), (entity, "label"),
               (entity, "fields"), (field, "max_length"), (field, "options"),
               (field.options[0], "label"), (field.label, "values"),
               (acme.modules["customer"], "owner"), (acme.units["retail"], "parent"),
               (acme.relations[0], "target")]
    for target, name in targets:
        with pytest.raises(dataclasses.FrozenInstanceError):
            setattr(target, name, None)


def test_registry_mappings_cannot_be_changed(acme: Registry) -> None:
    for mapping in (acme.entities, acme.scopes, acme.modules, acme.units,
                    acme.scope("retail").forms, acme.scope(None).views):
        assert isinstance(mapping, FrozenDict)
        with pytest.raises(TypeError):
            mapping["x"] = None  # type: ignore[index]
        key = next(iter(mapping))
        with pytest.raises(TypeError):
            del mapping[key]  # type: ignore[attr-defined]
        for method in ("update", "pop", "popitem", "clear", "setdefault"):
            assert not hasattr(mapping, method)


def _assert_deeply_frozen(value: Any, path: str, seen: set[int]) -> None:
    if id(value) in seen or value is None or isinstance(value, str | int | float | Decimal):
        return
    seen.add(id(value))
    if isinstance(value, FrozenDict):
        for key, item in value.items():
            _assert_deeply_frozen(item, f"{path}[{key!r}]", seen)
    elif isinstance(value, tuple):
        for index, item in enumerate(value):
            _assert_deeply_frozen(item, f"{path}[{index}]", seen)
    elif dataclasses.is_dataclass(value) and not isinstance(value, type):
        assert type(value).__dataclass_params__.frozen, f"{path} is a mutable dataclass"
        if isinstance(value, Formula):
            return  # the formula module's own frozen tree (tested in test_formula.py)
        for item in dataclasses.fields(value):
            _assert_deeply_frozen(getattr(value, item.name), f"{path}.{item.name}", seen)
    else:
        raise AssertionError(f"{path} is a mutable {type(value).__name__}")


def test_registry_holds_no_mutable_value_anywhere(acme: Registry) -> None:
    _assert_deeply_frozen(acme, "registry", set())


@given(st.dictionaries(st.text(max_size=5), st.integers()))
def test_frozen_dict_is_a_read_only_ordered_copy(items: dict[str, int]) -> None:
    frozen = FrozenDict(items)
    assert frozen == items
    assert list(frozen) == list(items)
    assert len(frozen) == len(items)
    items["extra key!"] = 1
    assert "extra key!" not in frozen
    assert pickle.loads(pickle.dumps(frozen)) == frozen
    with pytest.raises(AttributeError):
        frozen.anything = 1  # type: ignore[attr-defined]


@given(st.dictionaries(st.text(max_size=3), st.integers(), max_size=6), st.randoms())
def test_equal_frozen_dicts_hash_alike(items: dict[str, int], random: Any) -> None:
    """Equality ignores order, so the hash must too."""
    shuffled = list(items.items())
    random.shuffle(shuffled)
    first, second = FrozenDict(items), FrozenDict(shuffled)
    assert first == second
    assert hash(first) == hash(second)


# -- pickling ----------------------------------------------------------------------------------

@pytest.mark.parametrize("protocol", [2, pickle.DEFAULT_PROTOCOL, pickle.HIGHEST_PROTOCOL])
def test_registry_pickles_round_trip(acme: Registry, protocol: int) -> None:
    copy = pickle.loads(pickle.dumps(acme, protocol=protocol))
    assert copy == acme
    assert copy is not acme
    assert copy.version == acme.version
    customer = copy.entity("customer.customer", "education")
    assert customer.field("school").label.get("zh-Hant") == "學校"
    assert customer.field("school").source == acme.entity(
        "customer.customer", "education").field("school").source
    assert customer.field("value_tier").formula == acme.entity(
        "customer.customer").field("value_tier").formula
    assert isinstance(copy.scopes, FrozenDict)


# -- sharing and lifetime ----------------------------------------------------------------------

def test_unchanged_definitions_are_one_object_in_every_scope(acme: Registry) -> None:
    contact_points = {id(s.entities["customer.contact_point"]) for s in acme.scopes.values()}
    contact_points.add(id(acme.entities["customer.contact_point"]))
    assert len(contact_points) == 1
    emails = {id(s.entities["customer.customer"].field("email")) for s in acme.scopes.values()}
    assert len(emails) == 1
    assert acme.scope("retail").forms["customer.customer_default"] is \
        acme.scope("education").forms["customer.customer_default"]


def test_relations_and_incoming_links(acme: Registry) -> None:
    links = {(r.kind, r.source, r.field, r.target, r.on_delete) for r in acme.relations}
    assert ("reference", "customer.contact_point", "customer", "customer.customer",
            "cascade") in links
    assert ("many_to_many", "customer.customer", "tags", "customer.tag", None) in links
    assert [r.source for r in acme.incoming("customer.tag")] == ["customer.customer"]


CRM = {
    "metadata/modules/crm/module.yaml": "module: crm\nowner: crm-team\n",
    "metadata/modules/crm/entities/lead.yaml": """
        entity: lead
        fields:
          company: {type: string, label: Company}
    """,
}


def tenant(slug: str) -> dict[str, str]:
    return {f"tenants/{slug}/tenant.yaml": f"tenant: {slug}\nmodules: [crm]\noverlays: [ov]\n",
            f"tenants/{slug}/ov/lead.yaml": "extend: crm.lead\nfields:\n  company: {label: Firm}\n"}


def relabel(library: Library, slug: str, label: str) -> None:
    path = library.tenants_dir / slug / "ov" / "lead.yaml"
    path.write_text(f"extend: crm.lead\nfields:\n  company: {{label: {label}}}\n", "utf-8")


def registry_ref(compiler: Compiler, slug: str) -> weakref.ref[Registry]:
    """Compile and keep only a weak reference (no frame of ours holds the Registry)."""
    result = compiler.compile_tenant(slug)
    assert result.registry is not None
    return weakref.ref(result.registry)


def test_a_registry_is_freed_once_no_tenant_uses_it(tmp_path: Path) -> None:
    library = make_library(tmp_path, {**CRM, **tenant("alpha")})
    compiler = Compiler(library)
    old = registry_ref(compiler, "alpha")
    gc.collect()
    assert old() is not None  # the tenant's current result keeps it
    relabel(library, "alpha", "Organisation")
    new = registry_ref(compiler, "alpha")
    gc.collect()
    assert old() is None
    assert new() is not None and new().entity("crm.lead").field("company").label.get() == \
        "Organisation"


def test_a_shared_registry_lives_while_any_tenant_uses_it(tmp_path: Path) -> None:
    library = make_library(tmp_path, {**CRM, **tenant("alpha"), **tenant("beta")})
    compiler = Compiler(library)
    shared = registry_ref(compiler, "alpha")
    assert registry_ref(compiler, "beta")() is shared()
    relabel(library, "alpha", "Organisation")
    assert registry_ref(compiler, "alpha")() is not shared()
    gc.collect()
    assert shared() is not None  # beta still uses it
    relabel(library, "beta", "Organisation")
    assert registry_ref(compiler, "beta")() is registry_ref(compiler, "alpha")()
    gc.collect()
    assert shared() is None


# -- Text: locale fallback ---------------------------------------------------------------------

KEYS = ["en", "en-GB", "zh", "zh-Hant", "zh-Hans", "zh-Hant-TW", "fr", "fr-CA", "ja",
        ANY_LOCALE]
LOCALES = ["en", "en-GB", "en-US", "zh", "zh-Hant", "zh-Hans", "zh-TW", "zh-CN", "zh-SG",
           "zh-HK", "zh-Hant-TW", "zh-Hant-HK", "fr", "fr-CA", "de", "ja", "pt-BR"]
SCRIPT_OF_REGION = {"zh-TW": "zh-Hant", "zh-HK": "zh-Hant", "zh-CN": "zh-Hans",
                    "zh-SG": "zh-Hans"}  # written out here, not imported: the model is ours

texts = st.lists(st.sampled_from(KEYS), unique=True).flatmap(
    lambda keys: st.permutations(keys)).map(lambda keys: Text(tuple((k, f"<{k}>") for k in keys)))
locales = st.sampled_from(LOCALES)


def language(tag: str) -> str:
    return tag.split("-")[0]


def fallback_key(keys: list[str], locale: str | None) -> str:
    """The documented ladder: the tag and its shorter prefixes, any (`*`), English, first."""
    if locale:
        if locale in keys:
            return locale
        if SCRIPT_OF_REGION.get(locale) in keys:  # zh-CN reads Simplified before zh
            return SCRIPT_OF_REGION[locale]
        parts = locale.split("-")
        while parts:  # zh-Hant-TW, then zh-Hant, then zh
            if "-".join(parts) in keys:
                return "-".join(parts)
            parts.pop()
        if language(locale) == locale:
            regional = [k for k in keys if language(k) == locale]
            if regional:
                return regional[0]  # zh takes the first zh-* written
    for key in (ANY_LOCALE, "en"):
        if key in keys:
            return key
    return keys[0]


@given(texts, st.one_of(st.none(), locales))
def test_text_get_follows_the_fallback_ladder(value: Text, locale: str | None) -> None:
    keys = [k for k, _ in value.values]
    if not keys:
        assert value.get(locale, "dflt") == "dflt"
        assert not value
    else:
        assert value.get(locale) == f"<{fallback_key(keys, locale)}>"


@given(texts, locales)
def test_text_get_prefers_an_exact_match(value: Text, locale: str) -> None:
    assume(locale in dict(value.values))
    assert value.get(locale) == f"<{locale}>"


@settings(suppress_health_check=[HealthCheck.filter_too_much])  # two assumptions, by design
@given(texts, locales)
def test_text_get_never_crosses_scripts_or_regions(value: Text, locale: str) -> None:
    """zh-Hans shows zh, `*` or English before it would show a sibling such as zh-Hant."""
    keys = [k for k, _ in value.values]
    assume(locale not in keys and language(locale) != locale)
    assume(ANY_LOCALE in keys or "en" in keys)
    got = value.get(locale)[1:-1]
    assert locale.startswith(got + "-") or language(got) != language(locale) or \
        got == SCRIPT_OF_REGION.get(locale)


@pytest.mark.parametrize(("values", "locale", "expected"), [
    ({"en": "Lead", "zh-Hant": "線索"}, "zh-Hant", "線索"),       # exact
    ({"en": "Lead", "zh": "线索"}, "zh-Hant", "线索"),             # language prefix
    ({"en": "Lead", "zh-Hant": "線索"}, "zh", "線索"),             # bare language, a variant
    ({"zh-Hant": "線索", "en": "Lead"}, "zh-Hans", "Lead"),       # no cross-script: English
    ({"zh-Hant": "線索", "zh-Hans": "线索", "en": "Lead"}, "zh-CN", "线索"),  # region's script
    ({"zh-Hant": "線索", "en": "Lead"}, "zh-CN", "Lead"),         # never the other script
    ({"zh-Hans": "线索", "zh-Hant": "線索"}, "zh-HK", "線索"),
    ({"fr": "Piste", "en": "Lead"}, "de", "Lead"),               # English
    ({"fr": "Piste", "ja": "リード"}, "de", "Piste"),              # first written
    ({"fr": "Piste", "ja": "リード"}, None, "Piste"),
])
def test_text_get_examples(values: dict[str, str], locale: str | None, expected: str) -> None:
    assert Text.of(values).get(locale) == expected


def test_plain_text_is_any_locale() -> None:
    text = Text.of("Lead")
    assert text.values == ((ANY_LOCALE, "Lead"),)
    assert text.get("zh-Hant") == text.get(None) == str(text) == "Lead"
    assert Text.of(None, "fallback").get("en") == "fallback"
    assert Text.of(None).get("en", "dflt") == "dflt"


def test_merged_lays_locales_over() -> None:
    base = Text.of({"en": "Lead", "zh-Hant": "線索"})
    assert base.merged(Text.of({"zh-Hant": "潛在客戶"})).get("en") == "Lead"
    assert base.merged(Text.of({"zh-Hant": "潛在客戶"})).get("zh-Hant") == "潛在客戶"
    assert base.merged(Text.of("Prospect")).get("zh-Hant") == "Prospect"


def test_text_get_truncates_longer_tags() -> None:
    assert Text.of({"en": "Lead", "zh-Hant": "線索"}).get("zh-Hant-TW") == "線索"
    assert Text.of({"en": "Lead", "zh": "线索"}).get("zh-Hant-TW") == "线索"
    assert Text.of({"en": "Lead", "zh-Hant-HK": "線索"}).get("zh-Hant-TW") == "Lead"
