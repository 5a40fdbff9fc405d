"""The `SECTIONS` registry (`specc.lang.sections`) against what derives from it and what it describes: the setting
tables of docs/language.md, the plan's fields, the checker's validators, and the hints of "unknown setting"."""

import re
import subprocess
import sys
from pathlib import Path

import pytest

from specc.compile.check import VALIDATORS
from specc.compile.expect import ExpectPlan
from specc.core.plan import DataPlan, DistributionPlan, InitPlan, TrainPlan, TunePlan
from specc.lang.sections import DISTRIBUTION_SETTINGS, SECTIONS, SETTINGS_SECTIONS, homes

DOC = Path(__file__).resolve().parent.parent / "docs" / "language.md"
# The heading of docs/language.md under which a section's table is; the file's own settings are under `language`.
HEADINGS = {"file": "language"}
TABLES = [name for name, s in SECTIONS.items() if s.settings]


def doc_table(section: str) -> dict[str, list[dict[str, str]]]:
    """The rows of the settings table under the section's heading, by the setting names their first cell holds
    (`features`, `target`; `params: 34_826`), each row as {column: text}."""
    heading = HEADINGS.get(section, section)
    part = re.search(rf"^## {heading}\n(.*?)(?=^## |\Z)", DOC.read_text(), re.S | re.M).group(1)
    lines = [line for line in part.splitlines() if line.startswith("|")]
    start = next(i for i, line in enumerate(lines) if line.startswith("| setting |"))
    header = [c.strip() for c in lines[start].strip("|").split(" | ")]
    rows: dict[str, list[dict[str, str]]] = {}
    for line in lines[start + 2:]:
        if line.startswith("| setting |"):
            break
        cells = dict(zip(header, (c.strip() for c in line.strip().strip("|").split(" | "))))
        for name in re.findall(r"`([a-z_]+)[^`]*`", cells["setting"]):
            rows.setdefault(name, []).append(cells)
    return rows


@pytest.mark.parametrize("section", TABLES)
def test_docs_table_lists_every_setting_of_the_section_and_no_other(section):
    rows = doc_table(section)
    assert sorted(rows) == sorted(SECTIONS[section].names)


@pytest.mark.parametrize("section", TABLES)
def test_docs_table_says_what_the_registry_says(section):
    rows = doc_table(section)
    meaning = next(c for c in ("meaning", "holds when") if c in next(iter(rows.values()))[0])
    for setting in SECTIONS[section].settings:
        assert setting.doc in [row[meaning] for row in rows[setting.name]], setting.name
        for row in rows[setting.name]:
            if "default" in row:
                assert row["default"] == setting.default, setting.name


@pytest.mark.parametrize("section, plan", [("data", DataPlan), ("train", TrainPlan), ("init", InitPlan),
                                           ("expect", ExpectPlan), ("tune", TunePlan)])
def test_registry_lists_the_plans_fields_in_their_order(section, plan):
    fields = tuple(f.alias or k for k, f in plan.model_fields.items() if k != "origins")
    assert SECTIONS[section].names == fields


def test_device_settings_are_the_platform_and_the_distribution():
    fields = tuple(k for k in DistributionPlan.model_fields if k != "origins")
    assert DISTRIBUTION_SETTINGS == fields
    assert SECTIONS["device"].names == ("kind", *fields)


def test_every_section_has_its_validator():
    assert set(VALIDATORS) == set(SECTIONS)


def test_settings_sections_in_the_order_messages_list_them():
    assert SETTINGS_SECTIONS == ("data", "train", "init", "device", "expect", "tune")


# Settings of one name in two sections, each a setting of its own section: `train`'s seed seeds training, `tune`'s
# the sampler. A misplaced `seed` is said to belong in the first (`train`).
SHARED = {"seed": ["train", "tune"]}


def test_a_setting_has_one_home():
    names = [name for s in SECTIONS.values() for name in s.names if name not in SHARED]
    assert len(names) == len(set(names))
    for name, sections in SHARED.items():
        assert [s.name for s in homes(name)] == sections
    assert [s.name for s in homes("epochs")] == ["train"]
    assert homes("epoch") == []


def test_closed_choices_and_examples_are_well_formed():
    for section in SECTIONS.values():
        for s in section.settings:
            assert s.takes and s.doc, (section.name, s.name)
            assert not s.example or s.example.startswith(f"{s.name}: "), (section.name, s.name)
            assert len(set(s.choices)) == len(s.choices), (section.name, s.name)


def test_the_registry_imports_neither_keras_nor_jax():
    code = ("import sys, specc.lang.sections; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('keras', 'jax')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
