"""Page labels in any language with a gettext catalog: `t(key)` in every template.

The catalogs are Babel/gettext files under ``dtx_trials/web/translations/<locale>/LC_MESSAGES``
(``messages.po``, compiled to ``messages.mo`` by ``make translations``; the compiled files are
committed and a test checks they match their sources). Message ids are symbolic keys; the
English catalog holds the English text and is every other catalog's fallback, so a key missing
from a translation shows in English (visibly untranslated, never blank). Plural forms follow
each catalog's ``Plural-Forms`` (``tn(key, n)``); dates and numbers are formatted for the
page's locale by Babel.

The language comes from the `lang` cookie (set by the switch link in the header), else from the
browser's Accept-Language, else English. Form labels come from the protocol (`Label.get(lang)`),
not from here.
"""

from __future__ import annotations

import datetime
import functools
import re
from collections.abc import Mapping
from pathlib import Path

from babel.dates import format_date
from babel.messages.mofile import read_mo
from babel.numbers import format_decimal
from babel.support import Translations

TRANSLATIONS = Path(__file__).resolve().parent / "translations"
# page language code (cookie value) -> catalog folder, BCP-47 tag for html lang, Babel locale
LANGUAGES = ("en", "zh", "zh-Hant")
LANGUAGE_NAMES = {"en": "English", "zh": "简体中文", "zh-Hant": "繁體中文"}
HTML_LANG = {"en": "en", "zh": "zh-Hans", "zh-Hant": "zh-Hant"}
CATALOGS = {"en": "en", "zh": "zh_Hans", "zh-Hant": "zh_Hant"}
LOCALES = {"en": "en", "zh": "zh_Hans_CN", "zh-Hant": "zh_Hant_TW"}


@functools.cache
def catalog(lang: str) -> Translations:
    """The compiled catalog of a page language, falling back to English for missing keys."""
    folder = CATALOGS.get(lang, "en")
    translations = Translations.load(str(TRANSLATIONS), [folder], domain="messages")
    if not isinstance(translations, Translations):
        raise RuntimeError(f"no compiled catalog for {folder}: run make translations")
    if folder != "en":
        translations.add_fallback(catalog("en"))
    return translations


def translate(key: str, lang: str, /, **values: object) -> str:
    """Return the label for `key` in `lang` (English when the catalog lacks it; the key itself
    when no catalog has it), with `{name}` filled in."""
    text = catalog(lang if lang in CATALOGS else "en").gettext(key)
    return text.format(**values) if values else text


def translate_plural(key: str, n: int, lang: str, /, **values: object) -> str:
    """The plural form of `key` for `n` under the catalog's plural rule; `{n}` is filled in."""
    text = catalog(lang if lang in CATALOGS else "en").ngettext(key, key, n)
    return text.format(n=format_number(n, lang), **values)


def format_number(value: float | int, lang: str) -> str:
    """A number with the locale's digit grouping and decimal sign."""
    return format_decimal(value, locale=LOCALES.get(lang, "en"))


def format_day(value: datetime.date | datetime.datetime, lang: str) -> str:
    """A calendar date in the locale's medium format (e.g. Dec 5, 2026 / 2026年12月5日)."""
    if isinstance(value, datetime.datetime):
        value = value.date()
    return format_date(value, format="medium", locale=LOCALES.get(lang, "en"))


def coverage() -> dict[str, tuple[int, int]]:
    """Per page language: (keys translated, keys of the English catalog)."""
    keys = _keys("en")
    return {lang: (len(keys & _keys(lang)), len(keys)) for lang in LANGUAGES}


def _keys(lang: str) -> set[str]:
    path = TRANSLATIONS / CATALOGS[lang] / "LC_MESSAGES" / "messages.mo"
    with path.open("rb") as fh:
        mo = read_mo(fh)
    return {
        m.id if isinstance(m.id, str) else m.id[0]
        for m in mo
        if m.id and (m.string if isinstance(m.string, str) else all(m.string))
    }


# Messages of the form engine (ecrf) and of the form service, as English patterns; a match is
# translated by the catalog key ``engine_NN`` (NN its index here), where ``{0}`` is the group.
# Edit checks carry their own Chinese text in the protocol.
ENGINE_PATTERNS: tuple[re.Pattern[str], ...] = tuple(
    re.compile(f"^{pattern}$")
    for pattern in (
        r"the form has errors",
        r"required",
        r"must be at least (.+)",
        r"must be at most (.+)",
        r"must be a number",
        r"must be a finite number",
        r"must be a whole number",
        r"at most (\d+) decimal place\(s\)",
        r"number out of range",
        r"must be text",
        r"at most (\d+) characters",
        r"must be a date YYYY-MM-DD",
        r"not a valid calendar date",
        r"must be (?:on|at) or after (.+)",
        r"must be (?:on|at) or before (.+)",
        r"must be a date and time .+",
        r"must be a time HH:MM or HH:MM:SS",
        r"not a valid time of day",
        r"must be yes or no",
        r"must be a choice code",
        r"(.+) is not one of the choices",
        r"unknown field",
    )
)


def translate_message(text: str, lang: str, known: Mapping[str, str] | None = None) -> str:
    """Return a form-engine or form-service message in `lang`.

    `known` maps English texts that have their own translation (the protocol's edit-check
    messages) to it; other texts are matched against the engine's messages; anything else is
    returned as it is.
    """
    if lang not in CATALOGS or lang == "en":
        return text
    if known and text in known:
        return known[text]
    for index, pattern in enumerate(ENGINE_PATTERNS):
        match = pattern.match(text)
        if match:
            return translate(f"engine_{index:02d}", lang).format(*match.groups())
    return text


def pick_language(cookie: str | None, accept_language: str | None) -> str:
    """Choose the page language: the cookie first, then the first supported Accept-Language."""
    if cookie in LANGUAGES:
        return cookie
    for part in (accept_language or "").split(","):
        tag = part.split(";")[0].strip().lower()
        if tag.startswith("zh"):
            # Traditional script: zh-Hant, and the regions that write it (Taiwan, Hong Kong,
            # Macao) unless a script is named
            traditional = "hant" in tag or (
                "hans" not in tag and tag.split("-")[-1] in ("tw", "hk", "mo")
            )
            return "zh-Hant" if traditional else "zh"
        if tag.startswith("en"):
            return "en"
    return "en"
