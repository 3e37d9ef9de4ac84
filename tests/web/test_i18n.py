"""Page languages from gettext catalogs (issue #22): the compiled catalogs match their sources,
every label the templates and views ask for is in every catalog (zh-Hant complete), plural
forms follow each language's rule, a missing translation falls back to English, the browser's
language picks Simplified or Traditional Chinese, dates and numbers follow the locale."""

from __future__ import annotations

import datetime
import shutil
import subprocess
import sys
from pathlib import Path

from babel.messages.mofile import read_mo
from babel.messages.pofile import read_po
from babel.support import Translations
from flask import Flask
from flask.testing import FlaskClient

from dtx_trials.web import i18n
from tests.dtx_trials.trial_flow import load_trial
from tests.web.web_helpers import MCI, PageClient, check_accessible

ROOT = Path(__file__).resolve().parents[2]


def _messages(catalog: object) -> dict[object, object]:
    return {
        (tuple(m.id) if isinstance(m.id, (list, tuple)) else m.id): tuple(m.string)
        if isinstance(m.string, (list, tuple))
        else m.string
        for m in catalog  # type: ignore[attr-defined]
        if m.id
    }


def test_compiled_catalogs_match_their_sources() -> None:
    for folder in i18n.CATALOGS.values():
        base = i18n.TRANSLATIONS / folder / "LC_MESSAGES"
        with (base / "messages.po").open("rb") as po, (base / "messages.mo").open("rb") as mo:
            source, compiled = read_po(po), read_mo(mo)
        assert _messages(source) == _messages(compiled), f"{folder}: run make translations"
        assert compiled.plural_forms == source.plural_forms


def test_every_extracted_label_is_in_every_catalog(tmp_path: Path) -> None:
    pot = tmp_path / "messages.pot"
    pybabel = Path(sys.executable).with_name("pybabel")
    subprocess.run(
        [
            str(pybabel),
            "--quiet",
            "extract",
            "-F",
            "dtx_trials/web/translations/babel.cfg",
            "-k",
            "t",
            "-k",
            "tn",
            "-k",
            "_t",
            "-k",
            "translate",
            "-o",
            str(pot),
            "--no-location",
            "--omit-header",
            ".",
        ],
        cwd=ROOT,
        check=True,
    )
    with pot.open("rb") as fh:
        extracted = {m.id if isinstance(m.id, str) else m.id[0] for m in read_po(fh) if m.id}
    # "st_" + status: a prefix of keys built at run time (each status has its own key)
    extracted = {key for key in extracted if not key.endswith("_")}
    assert len(extracted) > 300
    coverage = i18n.coverage()
    for lang in i18n.LANGUAGES:
        missing = sorted(extracted - i18n._keys(lang))
        assert not missing, (lang, missing)
        translated, total = coverage[lang]
        assert translated == total, (lang, translated, total)  # zh-Hant is complete
    # the keys built at run time exist too
    for status in ("empty", "draft", "submitted", "queried", "verified", "signed", "locked"):
        assert i18n.translate(f"st_{status}", "zh-Hant") != f"st_{status}"


def test_plural_forms_and_locale_formats() -> None:
    assert i18n.translate_plural("b_n_errors", 1, "en") == "1 error to fix before saving."
    assert i18n.translate_plural("b_n_errors", 3, "en") == "3 errors to fix before saving."
    # Chinese has one plural form
    assert i18n.translate_plural("b_n_errors", 3, "zh") == "保存前需修正 3 个错误。"
    assert i18n.translate_plural("b_n_errors", 3, "zh-Hant") == "保存前需修正 3 個錯誤。"
    assert i18n.translate_plural("b_n_errors", 12000, "en").startswith("12,000 errors")
    day = datetime.date(2026, 12, 5)
    assert i18n.format_day(day, "en") == "Dec 5, 2026"
    assert i18n.format_day(day, "zh") == "2026年12月5日"
    assert i18n.format_number(12345.5, "en") == "12,345.5"
    assert i18n.format_number(12345.5, "zh-Hant") == "12,345.5"
    # the form engine's messages in each language
    assert i18n.translate_message("must be at most 100", "zh") == "不能大于 100"
    assert i18n.translate_message("must be at most 100", "zh-Hant") == "不能大於 100"
    assert i18n.translate_message("must be at most 100", "en") == "must be at most 100"


def test_a_missing_translation_falls_back_to_english(tmp_path: Path) -> None:
    folder = tmp_path / "zh_Hant" / "LC_MESSAGES"
    folder.mkdir(parents=True)
    source = i18n.TRANSLATIONS / "zh_Hant" / "LC_MESSAGES" / "messages.po"
    with source.open("rb") as fh:
        catalog = read_po(fh)
    del catalog["record_grid"]
    from babel.messages.mofile import write_mo

    with (folder / "messages.mo").open("wb") as fh:
        write_mo(fh, catalog)
    partial = Translations.load(str(tmp_path), ["zh_Hant"], domain="messages")
    partial.add_fallback(i18n.catalog("en"))
    assert partial.gettext("record_grid") == "Record status"  # visibly English
    assert partial.gettext("participants") == i18n.translate("participants", "zh-Hant")
    assert i18n.translate("no_such_key", "zh-Hant") == "no_such_key"
    shutil.rmtree(tmp_path / "zh_Hant")


def test_browser_language_picks_the_script() -> None:
    assert i18n.pick_language(None, "zh-TW,zh;q=0.9,en;q=0.5") == "zh-Hant"
    assert i18n.pick_language(None, "zh-HK") == "zh-Hant"
    assert i18n.pick_language(None, "zh-Hant-MO") == "zh-Hant"
    assert i18n.pick_language(None, "zh-Hans-HK") == "zh"
    assert i18n.pick_language(None, "zh-CN,en") == "zh"
    assert i18n.pick_language(None, "ja,en;q=0.5") == "en"
    assert i18n.pick_language("zh-Hant", "en") == "zh-Hant"
    assert i18n.pick_language("xx", "en") == "en"


def test_pages_in_traditional_chinese(app: Flask, client: FlaskClient) -> None:
    staff = load_trial(client)
    inv = PageClient(app, staff["inv"])
    switched = inv.get(f"/lang/zh-Hant?next={MCI}/records")
    assert switched.status_code == 302
    page = inv.text(f"{MCI}/records")
    check_accessible(page)
    assert '<html lang="zh-Hant">' in page
    assert "記錄狀態" in page and "受試者編號包含" in page and "记录状态" not in page
    assert '<span aria-current="true" lang="zh-Hant">繁體中文</span>' in page
    # the other languages are offered with their own tags
    assert 'hreflang="zh-Hans"' in page and 'hreflang="en"' in page
