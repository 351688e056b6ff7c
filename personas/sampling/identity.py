"""Identity fields (name, city, email) drawn from per-locale pools built once with Faker.

Faker produces about 3k full names per second, far too slow row by row for a million personas.
Instead each locale gets pools of first names (male, female, any), last names, cities and email
domains, drawn once from a Faker seeded deterministically from the locale (so pools keep Faker's
own frequency weighting), cached per process, and rows index into them with numpy. The name
order and separator come from the locale's own Faker name formats (``{{last_name}} {{first_name}}``
for ja_JP, no space for zh_CN), so a German persona gets a German name in the German order.
Pools depend on the installed Faker version, which ``write_personas`` records.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from faker import Faker

from crowdlab.personas.sampling.streams import name_key

FIRST_POOL = 4096
LAST_POOL = 4096
CITY_POOL = 1024
DOMAIN_POOL = 64
GENDERS = ("any", "male", "female")
IDENTITY_STREAM = "__identity__"
IDENTITY_WIDTH = 5  # uniforms per row: first, last, city, domain, email number

_NAME_FORMAT = re.compile(r"^\{\{(first|last)_name\w*\}\}(\s*)\{\{(first|last)_name\w*\}\}$")
_ASCII_FOLD = str.maketrans({"ß": "ss", "æ": "ae", "œ": "oe", "ø": "o", "ł": "l", "đ": "d", "ð": "d", "þ": "th", "ı": "i"})


def slug(text: str) -> str:
    """Lower-case ASCII letters and digits only ('' for scripts without a Latin form)."""
    folded = unicodedata.normalize("NFKD", text.lower().translate(_ASCII_FOLD))
    return re.sub(r"[^a-z0-9]", "", folded.encode("ascii", "ignore").decode("ascii"))


@dataclass(frozen=True)
class LocalePools:
    locale: str
    first: dict[str, list[str]]
    last: dict[str, list[str]]
    city: list[str]
    domain: list[str]
    family_first: bool
    separator: str


def _name_order(fake: Faker) -> tuple[bool, str]:
    for provider in fake.providers:
        if not type(provider).__module__.startswith("faker.providers.person"):
            continue
        formats = getattr(provider, "formats_male", None) or getattr(provider, "formats", ())
        for fmt in formats:
            match = _NAME_FORMAT.match(fmt)
            if match and match.group(1) != match.group(3):
                return match.group(1) == "last", match.group(2)
    return False, " "


@lru_cache(maxsize=64)
def locale_pools(locale: str) -> LocalePools:
    """Pools for one locale, identical in every process for a given Faker version."""
    fake = Faker(locale)
    fake.seed_instance(name_key(f"pools:{locale}") % 2**32)
    first = {
        "any": [fake.first_name() for _ in range(FIRST_POOL)],
        "male": [fake.first_name_male() for _ in range(FIRST_POOL)],
        "female": [fake.first_name_female() for _ in range(FIRST_POOL)],
    }
    last = {
        "any": [fake.last_name() for _ in range(LAST_POOL)],
        "male": [fake.last_name_male() for _ in range(LAST_POOL)],
        "female": [fake.last_name_female() for _ in range(LAST_POOL)],
    }
    city = [fake.city() for _ in range(CITY_POOL)]
    domain = [fake.free_email_domain() for _ in range(DOMAIN_POOL)]
    family_first, separator = _name_order(fake)
    return LocalePools(locale, first, last, city, domain, family_first, separator)


@dataclass(frozen=True)
class PoolBank:
    """Pools of several locales concatenated, so a row's (locale, gender) picks a slice."""

    first: pa.Array
    first_slug: pa.Array
    first_offset: np.ndarray  # [locale, gender]
    last: pa.Array
    last_slug: pa.Array
    last_offset: np.ndarray
    city: pa.Array
    city_offset: np.ndarray  # [locale]
    domain: pa.Array
    domain_offset: np.ndarray
    family_first: np.ndarray
    separator: list[str]


@lru_cache(maxsize=16)
def pool_bank(locales: tuple[str, ...]) -> PoolBank:
    pools = [locale_pools(loc) for loc in locales]
    first = [name for p in pools for g in GENDERS for name in p.first[g]]
    last = [name for p in pools for g in GENDERS for name in p.last[g]]
    city = [c for p in pools for c in p.city]
    domain = [d for p in pools for d in p.domain]
    return PoolBank(
        first=pa.array(first, pa.string()),
        first_slug=pa.array([slug(x) for x in first], pa.string()),
        first_offset=np.arange(len(locales) * 3, dtype=np.int64).reshape(-1, 3) * FIRST_POOL,
        last=pa.array(last, pa.string()),
        last_slug=pa.array([slug(x) for x in last], pa.string()),
        last_offset=np.arange(len(locales) * 3, dtype=np.int64).reshape(-1, 3) * LAST_POOL,
        city=pa.array(city, pa.string()),
        city_offset=np.arange(len(locales), dtype=np.int64) * CITY_POOL,
        domain=pa.array(domain, pa.string()),
        domain_offset=np.arange(len(locales), dtype=np.int64) * DOMAIN_POOL,
        family_first=np.array([p.family_first for p in pools]),
        separator=[p.separator for p in pools],
    )


def identity_column(
    field: str, draws: np.ndarray, locales: tuple[str, ...], locale_codes: np.ndarray, gender_codes: np.ndarray
) -> pa.Array:
    """One identity column for rows with the given locale codes and gender codes (0 any, 1 male, 2 female)."""
    bank = pool_bank(locales)
    first_idx = bank.first_offset[locale_codes, gender_codes] + (draws[:, 0] * FIRST_POOL).astype(np.int64)
    last_idx = bank.last_offset[locale_codes, gender_codes] + (draws[:, 1] * LAST_POOL).astype(np.int64)
    if field == "first_name":
        return bank.first.take(first_idx)
    if field == "last_name":
        return bank.last.take(last_idx)
    if field == "city":
        return bank.city.take(bank.city_offset[locale_codes] + (draws[:, 2] * CITY_POOL).astype(np.int64))
    if field == "name":
        return _full_name(bank, locale_codes, bank.first.take(first_idx), bank.last.take(last_idx))
    if field == "email":
        return _email(bank, draws, locale_codes, first_idx, last_idx)
    raise ValueError(f"unknown identity field {field!r}")


def _full_name(bank: PoolBank, locale_codes: np.ndarray, first: pa.Array, last: pa.Array) -> pa.Array:
    separators = pa.array(bank.separator, pa.string()).take(locale_codes)
    given_first = pc.binary_join_element_wise(first, separators, last, "")
    family_first = pc.binary_join_element_wise(last, separators, first, "")
    return pc.if_else(pa.array(bank.family_first[locale_codes]), family_first, given_first)


def _email(bank: PoolBank, draws: np.ndarray, locale_codes: np.ndarray, first_idx: np.ndarray, last_idx: np.ndarray) -> pa.Array:
    first, last = bank.first_slug.take(first_idx), bank.last_slug.take(last_idx)
    number = pa.array(1 + (draws[:, 4] * 99).astype(np.int64)).cast(pa.string())
    domain = bank.domain.take(bank.domain_offset[locale_codes] + (draws[:, 3] * DOMAIN_POOL).astype(np.int64))
    named = pc.binary_join_element_wise(first, ".", last, number, "@", domain, "")
    anonymous_number = pa.array(100000 + (draws[:, 4] * 900000).astype(np.int64)).cast(pa.string())
    anonymous = pc.binary_join_element_wise("user", anonymous_number, "@", domain, "")
    latin = pc.and_(pc.greater(pc.utf8_length(first), 0), pc.greater(pc.utf8_length(last), 0))
    return pc.if_else(latin, named, anonymous)
