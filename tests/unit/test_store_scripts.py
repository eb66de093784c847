"""Each Lua script's header names its KEYS and ARGV in order; the Python helpers that build
them must say the same, so a reader of either side need not count positions."""

from __future__ import annotations

import inspect
import re
from collections.abc import Callable
from typing import Any

import pytest

from genq import demand, names
from genq.store import scripts
from genq.store.scripts import SCRIPT_PREFIXES, lua_source


def header(source: str, what: str) -> list[str]:
    """The names on a script's `-- KEYS:` or `-- ARGV:` line (`none`: no names)."""
    match = re.search(rf"^-- {what}: (.+)$", source, re.MULTILINE)
    assert match, f"no `-- {what}:` line"
    listed = match.group(1).strip()
    return [] if listed == "none" else [n.strip() for n in listed.split(",")]


def params(helper: Callable[..., Any]) -> list[str]:
    return list(inspect.signature(helper).parameters)


SCRIPTS = ["admit", "submit", "abandon", "finish", "cancel", "handback", "release", "revive"]


@pytest.mark.parametrize("name", SCRIPTS)
def test_the_args_helper_follows_the_scripts_argv_header(name: str) -> None:
    argv = header(lua_source(name), "ARGV")
    helper = getattr(scripts, f"{name}_args", None)
    if not argv:
        assert helper is None
        return
    assert helper is not None
    prefixed = argv[0] == "prefixes[6]"
    named = [n.removesuffix("[...]") for n in argv[1 if prefixed else 0 :]]
    assert params(helper) == named
    # Each value lands where the header says: call it with every name as its own value.
    values = {n: ({"field": "value"} if n == "fields" else n) for n in named}
    built = helper(**values)
    if prefixed:
        assert tuple(built[:6]) == SCRIPT_PREFIXES
        built = built[6:]
    expected = [x for n in named for x in (["field", "value"] if n == "fields" else [n])]
    assert built == expected


@pytest.mark.parametrize("name", SCRIPTS)
def test_the_keys_helper_gives_as_many_keys_as_the_header_names(name: str) -> None:
    keys = header(lua_source(name), "KEYS")
    helper = getattr(scripts, f"{name}_keys")
    built = helper(*["x"] * len(params(helper)))
    assert len(built) == len(keys)
    assert built[0] == names.job_key("x") and keys[0] == "job"


@pytest.mark.parametrize("name", SCRIPTS)
def test_every_script_names_its_arguments_before_using_them(name: str) -> None:
    # Only the lines that give ARGV and KEYS their names may index them.
    body = [line for line in lua_source(name).splitlines() if not line.startswith("--")]
    naming = re.compile(r"^\s*(local [\w, ]+=|ARGV\[\d+\](, ARGV\[\d+\])*$)")
    for line in body:
        if re.search(r"(ARGV|KEYS)\[\d+\]", line):
            assert naming.match(line), f"{name}.lua indexes by position: {line.strip()}"


def test_the_flight_scripts_begin_with_the_flight_library() -> None:
    flight = lua_source("flight")
    for source in (scripts.SUBMIT, scripts.FINISH, scripts.CANCEL, scripts.ABANDON):
        assert source.startswith(flight)
    for source in (scripts.ADMIT, scripts.HANDBACK, scripts.RELEASE, scripts.REVIVE):
        assert "local function settle" not in source


def test_the_demand_charge_follows_its_header() -> None:
    assert header(demand.CHARGE, "KEYS") == ["demand"]
    argv = header(demand.CHARGE, "ARGV")
    assert argv == ["now", "horizon", "charges[...]"]
    assert params(demand.charge_args) == ["now", "horizon", "charges"]
    assert demand.charge_args(now=1.0, horizon=2.0, charges=[("a", 3.0), ("b", 4.0)]) == [
        1.0,
        2.0,
        "a",
        3.0,
        "b",
        4.0,
    ]
