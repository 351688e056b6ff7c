"""Names, cities and e-mails are consistent with each row's locale and gender."""

from __future__ import annotations

import re

import pytest
from faker import Faker

from crowdlab.personas import load_spec, parse_spec, sample
from crowdlab.personas.sampling.identity import locale_pools, slug


@pytest.fixture(scope="module")
def multi(populations):
    spec = load_spec(populations / "multi_locale.yaml")
    return sample(spec, 3000, seed=41).to_pandas()


def _provider_names(locale: str, attr: str) -> set[str]:
    fake = Faker(locale)
    provider = next(p for p in fake.providers if type(p).__module__ == f"faker.providers.person.{locale}")
    return set(getattr(provider, attr))


def _splits_into(name: str, head: set[str], tail: set[str]) -> bool:
    """Some space in name separates a name from `head` and one from `tail` ("Anna von Arnim")."""
    parts = name.split(" ")
    return any(" ".join(parts[:i]) in head and " ".join(parts[i:]) in tail for i in range(1, len(parts)))


def test_german_personas_get_german_names(multi) -> None:
    german = multi[multi.locale == "de_DE"]
    assert len(german) > 300
    first = _provider_names("de_DE", "first_names")
    last = _provider_names("de_DE", "last_names")
    assert all(_splits_into(n, first, last) for n in german["name"])
    assert not any(_splits_into(n, first, last) for n in multi[multi.locale == "ja_JP"]["name"])
    assert set(german["city"]) <= set(locale_pools("de_DE").city)


def test_japanese_names_are_family_name_first(multi) -> None:
    japanese = multi[multi.locale == "ja_JP"]
    first, last = _provider_names("ja_JP", "first_names"), _provider_names("ja_JP", "last_names")
    assert all(_splits_into(n, last, first) for n in japanese["name"])


def test_first_names_follow_gender() -> None:
    spec = parse_spec(
        {
            "name": "t",
            "attributes": [
                {"name": "sex", "kind": "categorical", "values": ["male", "female"]},
                {"name": "first", "kind": "identity", "field": "first_name", "locale": "de_DE", "gender": "sex"},
            ],
        }
    )
    table = sample(spec, 1000, seed=42).to_pandas()
    male, female = _provider_names("de_DE", "first_names_male"), _provider_names("de_DE", "first_names_female")
    assert table[table.sex == "male"]["first"].isin(male).all()
    assert table[table.sex == "female"]["first"].isin(female).all()


def test_email_matches_name(multi) -> None:
    latin = multi[multi.locale.isin(["en_US", "de_DE", "fr_FR", "es_ES", "it_IT"])]
    for name, email in zip(latin["name"], latin["email"]):
        local, domain = email.split("@")
        assert re.fullmatch(r"[a-z0-9]+\.[a-z0-9]+\d{1,2}", local), email
        assert local.replace(".", "").rstrip("0123456789") == slug(name), (name, email)
        assert "." in domain
    japanese = multi[multi.locale == "ja_JP"]
    assert japanese["email"].str.match(r"^user\d{6}@").all()


def test_descriptions_mention_name_and_city(multi) -> None:
    assert all(row.name in row.description and row.city in row.description for row in multi.itertuples())


def test_slug_folds_accents() -> None:
    assert slug("Jörg-Straße") == "jorgstrasse"
    assert slug("Éloïse") == "eloise"
    assert slug("翼") == ""
