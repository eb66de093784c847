"""mkdocs hook: the settings and CLI references, generated from the code at build time.

A page asks for a generated section with a marker on a line of its own:

    <!-- genq:settings -->   every pydantic-settings class in the packages, one table each
    <!-- genq:cli -->        every `genq` command, from the typer app in genq/cli.py

Settings classes are found by reading the source (any class deriving from `BaseSettings` or
from another settings class), so a new one shows up without touching this file. Field
descriptions are the attribute docstrings the classes carry (pydantic only reads them with
`use_attribute_docstrings`, which genq does not set, so they are read here with `ast`). A
field without a description, or a module that cannot be imported, is a warning, and
`mkdocs build --strict` turns warnings into a failed build: the reference never goes stale
silently."""

from __future__ import annotations

import ast
import importlib
import logging
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

log = logging.getLogger("mkdocs.plugins.genq")

PACKAGES = ("genq", "producers", "scheduler", "workers")
"""Where settings classes may live (the project's top-level packages)."""

_ROOT = Path(__file__).resolve().parents[2]
_MARKER = re.compile(r"^<!-- genq:(\w+) -->$", re.MULTILINE)


def on_config(config: Any) -> Any:
    # The packages are installed editable by `make setup`; the root on the path makes a
    # plain `mkdocs build` from a clone work too.
    if str(_ROOT) not in sys.path:
        sys.path.insert(0, str(_ROOT))
    return config


def on_page_markdown(markdown: str, page: Any, config: Any, files: Any) -> str:
    def expand(match: re.Match[str]) -> str:
        kind = match.group(1)
        if kind == "settings":
            return settings_reference()
        if kind == "cli":
            return cli_reference()
        log.warning("%s: unknown marker genq:%s", page.file.src_path, kind)
        return match.group(0)

    return _MARKER.sub(expand, markdown)


# -- settings -------------------------------------------------------------------------------


@dataclass(frozen=True)
class _SettingsSource:
    module: str
    name: str
    bases: tuple[str, ...]
    annotations: dict[str, str]
    """Field name -> its annotation as written."""
    docs: dict[str, str]
    """Field name -> its attribute docstring."""
    defaults: dict[str, str]
    """Field name -> its default as written (`Field(1 / 30, gt=0)` -> `1 / 30`)."""
    doc: str | None
    """The class's docstring."""


def _module_name(path: Path) -> str:
    parts = path.relative_to(_ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _read_classes(path: Path) -> list[_SettingsSource]:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    found = []
    for node in tree.body:
        if not isinstance(node, ast.ClassDef):
            continue
        annotations: dict[str, str] = {}
        docs: dict[str, str] = {}
        defaults: dict[str, str] = {}
        for stmt, after in zip(node.body, [*node.body[1:], None], strict=True):
            if not (isinstance(stmt, ast.AnnAssign) and isinstance(stmt.target, ast.Name)):
                continue
            name = stmt.target.id
            annotations[name] = ast.unparse(stmt.annotation)
            if (
                isinstance(after, ast.Expr)
                and isinstance(after.value, ast.Constant)
                and isinstance(after.value.value, str)
            ):
                docs[name] = after.value.value
            value = stmt.value
            if isinstance(value, ast.Call) and value.args:
                value = value.args[0]
            if value is not None:
                defaults[name] = ast.unparse(value)
        bases = tuple(ast.unparse(b).rsplit(".", 1)[-1] for b in node.bases)
        found.append(
            _SettingsSource(
                _module_name(path),
                node.name,
                bases,
                annotations,
                docs,
                defaults,
                ast.get_docstring(node),
            )
        )
    return found


def _settings_sources() -> list[_SettingsSource]:
    """Every class that is a settings class, parents before children, in source order."""
    classes = []
    for package in PACKAGES:
        for path in sorted((_ROOT / package).rglob("*.py")):
            classes.extend(_read_classes(path))
    settings: list[_SettingsSource] = []
    known = {"BaseSettings"}
    grew = True
    while grew:  # a class counts once one of its bases does
        grew = False
        for cls in classes:
            if cls not in settings and known.intersection(cls.bases):
                settings.append(cls)
                known.add(cls.name)
                grew = True
    return settings


def _cell(text: str) -> str:
    """Text for a table cell: one line, and a `|` outside code spans escaped (Python-Markdown's
    tables leave a `|` inside backticks alone, and would print an entity there verbatim)."""
    parts = " ".join(text.split()).split("`")
    return "`".join(p if i % 2 else p.replace("|", "&#124;") for i, p in enumerate(parts))


def _type_text(annotation: str) -> str:
    # `Annotated[list[str], NoDecode]` is read from the environment as a list: the markers
    # after the type say how, not what.
    match = re.fullmatch(r"Annotated\[(.*?), \w+\]", annotation)
    return match.group(1) if match else annotation


_FRACTION = re.compile(r"\d+\s*/\s*\d+")


def _default_text(field: Any, source_default: str | None) -> str:
    if field.is_required():
        return "required"
    value = field.get_default(call_default_factory=True)
    if value is None:
        return "unset"
    if isinstance(value, (list, tuple, dict)) and not value:
        return "empty"
    if source_default and _FRACTION.fullmatch(source_default):
        return f"`{source_default.replace(' ', '')}`"  # 1/30 reads better than 0.0333…
    if isinstance(value, bool):
        return f"`{str(value).lower()}`"
    if isinstance(value, float) and value.is_integer():
        value = int(value)  # 30, not 30.0: what one would write in the environment
    return f"`{value}`"


def _number(bound: Any) -> str:
    if isinstance(bound, float) and bound.is_integer():
        bound = int(bound)
    return f"{bound:,}" if isinstance(bound, int) else f"{bound:g}"


def _range_text(field: Any) -> str:
    found: dict[str, Any] = {}
    patterns = []
    for item in field.metadata:
        for attr in ("ge", "gt", "le", "lt"):
            if getattr(item, attr, None) is not None:
                found[attr] = getattr(item, attr)
        if getattr(item, "pattern", None):
            patterns.append(item.pattern)
    parts = []
    if "ge" in found and "le" in found:
        parts.append(f"{_number(found.pop('ge'))} to {_number(found.pop('le'))}")
    for attr, sign in (("ge", "≥"), ("gt", ">"), ("le", "≤"), ("lt", "<")):
        if attr in found:
            parts.append(f"{sign} {_number(found[attr])}")
    for pattern in patterns:
        choice = re.fullmatch(r"\^\(([\w|]+)\)\$", pattern)
        parts.append(
            "one of " + ", ".join(f"`{c}`" for c in choice.group(1).split("|"))
            if choice
            else f"matches `{pattern}`"
        )
    return ", ".join(parts)


def settings_reference() -> str:
    sources = _settings_sources()
    if not sources:
        log.warning("genq:settings: no settings classes found under %s", ", ".join(PACKAGES))
        return ""
    out: list[str] = []
    for src in sources:
        try:
            module = importlib.import_module(src.module)
        except Exception as exc:  # noqa: BLE001 - whatever broke the import, the page says which
            log.warning("genq:settings: cannot import %s: %s", src.module, exc)
            continue
        cls = getattr(module, src.name)
        prefix = cls.model_config.get("env_prefix", "")
        parents = [b for b in src.bases if b != "BaseSettings"]
        out.append(f"### `{src.name}`\n")
        out.append(f"`{src.module}.{src.name}`")
        if parents:
            out.append(
                " — also reads every field of "
                + ", ".join(f"[`{p}`](#{p.lower()})" for p in parents)
            )
        out.append(".\n\n")
        if src.doc:
            out.append(" ".join(src.doc.split()) + "\n\n")
        own = [name for name in src.annotations if name in cls.model_fields]
        if not own:
            out.append("No fields of its own.\n\n")
            continue
        out.append("| Variable | Type | Default | Range | Description |\n")
        out.append("| --- | --- | --- | --- | --- |\n")
        for name in own:
            field = cls.model_fields[name]
            alias = field.validation_alias if isinstance(field.validation_alias, str) else None
            env = alias or f"{prefix}{name}".upper()
            doc = field.description or src.docs.get(name, "")
            if not doc:
                log.warning(
                    "genq:settings: %s.%s has no description (a docstring under the field)",
                    src.name,
                    name,
                )
            out.append(
                f"| `{env}` | {_cell('`' + _type_text(src.annotations[name]) + '`')} "
                f"| {_default_text(field, src.defaults.get(name))} | {_range_text(field)} "
                f"| {_cell(doc)} |\n"
            )
        out.append("\n")
    return "".join(out)


# -- CLI ------------------------------------------------------------------------------------


def _param_type(param: Any) -> str:
    # Click names a parameter's type `param.type.name`; the typer releases that carry their
    # own fork of click name it `param.bare_type()`. Whichever is there is read.
    kind = getattr(param, "type", None)
    if kind is not None and getattr(kind, "name", None):
        return str(kind.name)
    bare = getattr(param, "bare_type", None)
    return str(bare()) if callable(bare) else ""


def _param_row(param: Any) -> str:
    if param.param_type_name == "argument":
        name = f"`{param.name.upper()}`"
        kind = "argument"
    else:
        names = list(param.opts) + list(getattr(param, "secondary_opts", None) or [])
        name = ", ".join(f"`{n}`" for n in names)
        kind = "flag" if getattr(param, "is_flag", False) else _param_type(param)
    if param.required:
        default = "required"
    elif param.default is None or param.default is False or param.default in ((), []):
        default = ""
    else:
        default = f"`{param.default}`"
    if param.multiple:
        kind += ", repeatable"
    help_text = getattr(param, "help", None) or ""
    return f"| {name} | {_cell(kind)} | {default} | {_cell(help_text)} |\n"


def _command_section(path: str, command: Any, depth: int) -> list[str]:
    out = [f"{'#' * depth} `{path}`\n\n"]
    if command.help:
        out.append(command.help.strip() + "\n\n")
    params = [p for p in command.params if not getattr(p, "hidden", False) and p.name != "help"]
    if params:
        out.append("| Argument / option | Type | Default | Description |\n")
        out.append("| --- | --- | --- | --- |\n")
        out.extend(_param_row(p) for p in params)
        out.append("\n")
    for name, sub in (getattr(command, "commands", None) or {}).items():
        if not sub.hidden:
            out.extend(_command_section(f"{path} {name}", sub, depth + 1))
    return out


def cli_reference() -> str:
    try:
        import typer

        from genq.cli import app
    except Exception as exc:  # noqa: BLE001 - whatever broke the import, the page says which
        log.warning("genq:cli: cannot import genq.cli: %s", exc)
        return ""
    group: Any = typer.main.get_command(app)
    out: list[str] = []
    for name, command in group.commands.items():  # typer keeps the order of declaration
        if not command.hidden:
            out.extend(_command_section(f"genq {name}", command, 2))
    return "".join(out)
