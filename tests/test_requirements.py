"""Requirements and the tests that prove them (docs/compliance/requirements.yaml).

Markers are read from the test files' source with ``ast`` (no test is imported or run): a
``@pytest.mark.requirement("R9", ...)`` decorator on a test function or class, or a module's
``pytestmark``. A requirement verified by test needs at least one marked test, a marker may
name only a listed requirement, and a procedural requirement needs its procedure written."""

from __future__ import annotations

import ast
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from application.validation.checks import CHECKS

ROOT = Path(__file__).resolve().parents[1]
REQUIREMENTS = ROOT / "docs" / "compliance" / "requirements.yaml"
PROCEDURES = ROOT / "docs" / "compliance" / "procedures.md"
TESTS = ROOT / "tests"
FIELDS = {"id", "title", "status", "sources", "system", "verification"}


def requirements() -> list[dict[str, Any]]:
    """The requirements as listed."""
    listed: list[dict[str, Any]] = yaml.safe_load(REQUIREMENTS.read_text())["requirements"]
    return listed


def _requirement_ids(decorator: ast.expr) -> list[str] | None:
    """The ids of a ``pytest.mark.requirement(...)`` call (None if it is something else)."""
    if not (isinstance(decorator, ast.Call) and isinstance(decorator.func, ast.Attribute)
            and decorator.func.attr == "requirement"
            and ast.unparse(decorator.func.value) in ("pytest.mark", "mark")):
        return None
    ids = []
    for arg in decorator.args:
        if not (isinstance(arg, ast.Constant) and isinstance(arg.value, str)):
            raise AssertionError(f"a requirement marker takes literal ids: {ast.unparse(arg)}")
        ids.append(arg.value)
    return ids


def markers_in(source: str, name: str) -> dict[str, list[str]]:
    """``{test id: [requirement ids]}`` of one test file's source (``name`` its path)."""
    found: dict[str, list[str]] = {}
    tree = ast.parse(source)
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            for decorator in node.decorator_list:
                ids = _requirement_ids(decorator)
                if ids is not None:
                    found.setdefault(f"{name}::{node.name}", []).extend(ids)
        elif (isinstance(node, ast.Assign) and node in tree.body
              and any(isinstance(t, ast.Name) and t.id == "pytestmark" for t in node.targets)):
            values = node.value.elts if isinstance(node.value, ast.List) else [node.value]
            for value in values:
                ids = _requirement_ids(value)
                if ids is not None:
                    found.setdefault(name, []).extend(ids)
    return found


def marked_tests() -> dict[str, list[str]]:
    """Every marked test of the suite, with the requirements it names."""
    found: dict[str, list[str]] = {}
    for path in sorted(TESTS.rglob("test_*.py")):
        found.update(markers_in(path.read_text(), path.relative_to(ROOT).as_posix()))
    return found


def test_the_file_lists_r1_to_r25_each_once_with_every_field() -> None:
    listed = requirements()
    assert [r["id"] for r in listed] == [f"R{n}" for n in range(1, 26)]
    for requirement in listed:
        assert requirement.keys() >= FIELDS, requirement["id"]
        assert requirement["verification"] in ("test", "procedural"), requirement["id"]
        assert requirement["status"] in ("met", "partial"), requirement["id"]
        if requirement["status"] == "partial":
            assert requirement.get("missing"), f"{requirement['id']}: partial says what is missing"
        for source in requirement["sources"]:
            assert source.keys() == {"regulation", "section"}, requirement["id"]


def test_every_requirement_verified_by_test_has_a_marked_test() -> None:
    proved = {rid for ids in marked_tests().values() for rid in ids}
    untested = [r["id"] for r in requirements()
                if r["verification"] == "test" and r["id"] not in proved]
    assert not untested, f"requirements without a marked test: {untested}"


def test_every_marker_names_a_listed_requirement() -> None:
    known = {r["id"] for r in requirements()}
    unknown = {test: sorted(set(ids) - known) for test, ids in marked_tests().items()
               if set(ids) - known}
    assert not unknown, f"markers naming requirements not in requirements.yaml: {unknown}"


def test_every_procedure_named_is_written() -> None:
    headings = set(re.findall(r"^## (.+)$", PROCEDURES.read_text(), re.MULTILINE))
    for requirement in requirements():
        if requirement["verification"] == "procedural":
            assert requirement.get("procedure"), f"{requirement['id']} names no procedure"
        if requirement.get("procedure"):
            assert requirement["procedure"] in headings, requirement["id"]


def test_every_validation_check_names_listed_requirements() -> None:
    known = {r["id"] for r in requirements()}
    for check in CHECKS:
        assert check.requirements and set(check.requirements) <= known, check.name


@pytest.mark.parametrize(("source", "expected"), [
    ('@pytest.mark.requirement("R9", "R10")\ndef test_a(): pass',
     {"t.py::test_a": ["R9", "R10"]}),
    ('import pytest\npytestmark = [pytest.mark.slow, pytest.mark.requirement("R1")]',
     {"t.py": ["R1"]}),
    ('class TestX:\n    pass\n@pytest.mark.slow(seconds=3)\ndef test_b(): pass', {}),
])
def test_markers_are_found_where_pytest_applies_them(source: str,
                                                     expected: dict[str, list[str]]) -> None:
    assert markers_in(source, "t.py") == expected
