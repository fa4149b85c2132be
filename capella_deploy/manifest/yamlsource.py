"""Manifest sources: YAML files read into trees that remember where every value came from.

Reading a file
    The file is composed with a PyYAML ``SafeLoader`` into a tree of ``YMap`` / ``YSeq`` / ``YScalar``
    nodes, each carrying the ``Position`` (file, 1-based line) of the key that introduced it, or of the
    item itself inside a list. Errors found later (by pydantic, by cross-field checks) are mapped back to
    those positions, so every message points at a line a person can open.

    Hostile input is refused before it can cost much: files over ``MAX_BYTES`` are not parsed, more than
    ``MAX_ALIASES`` alias references or nesting deeper than ``MAX_DEPTH`` stop the composer as soon as it
    meets them, and the alias graph is measured (size, depth, cycles) before anything is expanded, so a
    "billion laughs" document is rejected with bounded memory. A file holds exactly one YAML document.
    YAML merge keys (``<<: *anchor``) are honoured; duplicate keys in one mapping are an error.

Interpolation
    Every string scalar (not keys) may use ``${VAR}``, ``${VAR:-default}`` (default when VAR is unset or
    empty) and ``$${`` for a literal ``${``. Values come from ``--var`` first, then the environment;
    they are inserted as text and never interpolated again. Interpolation runs per file, before merging
    and validation, so a number or boolean written as ``${VAR}`` reaches validation as text and is
    coerced there. An unknown variable is reported at its own file and line, and so is a reference to
    CAPELLA_API_TOKEN: the Management API token is a credential of the tool, never a value of the manifest.

Merging several files (``-f base.yaml -f overlay.yaml``)
    Files merge in the order given, each on top of the result so far:

    * mappings merge key by key, recursively;
    * scalars and lists from the later file replace the earlier value wholesale;
    * except the top-level ``models``, ``apiKeys`` and ``providers`` lists, which merge entry by entry on ``name``:
      an overlay entry whose name matches an earlier entry deep-merges into it (with the same rules),
      an entry with a new name is appended, and an entry with ``$delete: true`` removes the earlier
      entry of that name.

    Every value keeps the position it was read from, so an error in a value an overlay supplied points
    at the overlay file.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from capella_deploy.secrets import API_TOKEN_VARIABLE

MAX_BYTES = 5 * 1024 * 1024
MAX_ALIASES = 100
MAX_DEPTH = 64
# Size of the document with every alias expanded; a real manifest is a few thousand nodes at most.
MAX_NODES = 100_000
# Values written out in one file, counted while reading so a huge flat file stops early: about 3,000 models.
MAX_FILE_NODES = 50_000

MERGED_LISTS = ("models", "apiKeys", "providers")
DELETE_KEY = "$delete"

_MAP_TAG = "tag:yaml.org,2002:map"
_SEQ_TAG = "tag:yaml.org,2002:seq"
_MERGE_TAG = "tag:yaml.org,2002:merge"
_VARIABLE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_REFERENCE = re.compile(r"\$\$\{|\$\{(?P<body>[^}]*)\}|\$\{")


@dataclass(frozen=True)
class ManifestIssue:
    """One problem in the manifest sources, printed as ``file:line: path: message``."""

    file: str
    line: int | None
    path: str
    message: str

    def __str__(self) -> str:
        where = self.file if self.line is None else f"{self.file}:{self.line}"
        return f"{where}: {self.path}: {self.message}" if self.path else f"{where}: {self.message}"


@dataclass(frozen=True)
class Position:
    file: str
    line: int | None

    def issue(self, path: str, message: str) -> ManifestIssue:
        return ManifestIssue(self.file, self.line, path, message)


@dataclass
class YScalar:
    value: Any
    pos: Position
    # Set when this value could not be read or interpolated (an issue is already reported here):
    # validation errors about it would only repeat that issue less clearly.
    tainted: bool = False
    # The text as the file wrote it, when interpolation changed it: a message can name the variables.
    written: str | None = None


@dataclass
class YSeq:
    items: list[YNode]
    pos: Position


@dataclass
class YMap:
    entries: dict[str, YNode]
    pos: Position


YNode = YScalar | YSeq | YMap


@dataclass
class Source:
    """A file read as far as it could be: ``tree`` is None when it could not be used at all."""

    tree: YMap | None
    issues: list[ManifestIssue] = field(default_factory=list)
    # The variable names the file references as ${NAME} or ${NAME:-default}.
    referenced: frozenset[str] = frozenset()


# -- reading ------------------------------------------------------------------------------------------


class _Refused(Exception):
    def __init__(self, line: int | None, message: str) -> None:
        super().__init__(message)
        self.line = line
        self.message = message


class _BoundedLoader(yaml.SafeLoader):
    """A SafeLoader whose composer stops at the alias and depth limits instead of after the damage."""

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._aliases = 0
        self._depth = 0
        self._nodes = 0

    def compose_node(self, parent: Node | None, index: int) -> Node | None:
        line = self.peek_event().start_mark.line + 1  # type: ignore[no-untyped-call]
        if self.check_event(yaml.AliasEvent):
            self._aliases += 1
            if self._aliases > MAX_ALIASES:
                raise _Refused(line, f"more than {MAX_ALIASES} aliases (*name); refusing to expand the file")
            return super().compose_node(parent, index)
        self._nodes += 1
        if self._nodes > MAX_FILE_NODES:
            raise _Refused(line, f"more than {MAX_FILE_NODES} values in one file; split the manifest into overlays")
        self._depth += 1
        try:
            if self._depth > MAX_DEPTH:
                raise _Refused(line, f"nesting deeper than {MAX_DEPTH} levels; refusing to read the file")
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1


def read_source(path: Path, lookup: Mapping[str, str]) -> Source:
    """Read, compose, convert and interpolate one manifest file."""
    name = str(path)  # as the user wrote it, like a compiler would
    try:
        text = _read_text(path)
    except _Refused as exc:
        return Source(None, [ManifestIssue(name, exc.line, "", exc.message)])
    try:
        loader = _BoundedLoader(text)
        try:
            node = loader.get_single_node()
        finally:
            loader.dispose()
        if node is not None:
            _measure(node)
    except _Refused as exc:
        return Source(None, [ManifestIssue(name, exc.line, "", exc.message)])
    except yaml.MarkedYAMLError as exc:
        return Source(None, [ManifestIssue(name, _mark_line(exc), "", _yaml_message(exc))])
    except yaml.reader.ReaderError as exc:
        line = text.count("\n", 0, exc.position) + 1
        return Source(None, [ManifestIssue(name, line, "", f"unreadable character: {exc.reason}")])
    except yaml.YAMLError as exc:
        return Source(None, [ManifestIssue(name, None, "", f"YAML error: {exc}")])

    if node is None:  # an empty file (comments only) contributes nothing
        return Source(YMap({}, Position(name, 1)))
    converter = _Converter(name, loader)
    tree = converter.convert(node, "")
    issues = converter.issues
    if not isinstance(tree, YMap):
        issues.append(ManifestIssue(name, tree.pos.line, "", "a manifest is a mapping (apiVersion:, models:, ...)"))
        return Source(None, issues)
    referenced: set[str] = set()
    issues.extend(interpolate(tree, lookup, referenced))
    return Source(tree, issues, frozenset(referenced))


def _read_text(path: Path) -> str:
    try:
        with path.open("rb") as handle:
            data = handle.read(MAX_BYTES + 1)
    except FileNotFoundError:
        raise _Refused(None, "file not found; check the -f path") from None
    except IsADirectoryError:
        raise _Refused(None, "is a directory; pass a manifest file with -f") from None
    except OSError as exc:
        raise _Refused(None, f"cannot read the file: {exc.strerror or exc}") from None
    if len(data) > MAX_BYTES:
        raise _Refused(None, f"file is larger than {MAX_BYTES // (1024 * 1024)} MiB; refusing to parse it")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise _Refused(line, "not UTF-8 text; save the manifest as UTF-8") from None


def _mark_line(exc: yaml.MarkedYAMLError) -> int | None:
    mark = exc.problem_mark or exc.context_mark
    return mark.line + 1 if mark is not None else None


def _yaml_message(exc: yaml.MarkedYAMLError) -> str:
    if exc.problem == "but found another document":
        return "more than one YAML document (---) in one file; put each manifest in its own file"
    parts = [part for part in (exc.context, exc.problem) if part]
    message = "YAML syntax error: " + ", ".join(parts) if parts else "YAML syntax error"
    context, problem = exc.context_mark, exc.problem_mark
    if context is not None and problem is not None and context.line != problem.line:
        message += f" (the construct starts at line {context.line + 1})"
    return message


def _children(node: Node) -> list[Node]:
    if isinstance(node, SequenceNode):
        return list(node.value)
    if isinstance(node, MappingNode):
        return [part for pair in node.value for part in pair]
    return []


def _measure(root: Node) -> None:
    """Refuse alias graphs that are cyclic, or too large or too deep once expanded.

    Works on the composed graph, where an alias is a shared node, so the cost is linear in the file
    and nothing is expanded. Iterative because the expanded depth is what is being checked.
    """
    size: dict[int, int] = {}
    height: dict[int, int] = {}
    open_nodes: set[int] = set()
    stack: list[tuple[Node, bool]] = [(root, False)]
    while stack:
        node, finished = stack.pop()
        key = id(node)
        kids = _children(node)
        if finished:
            open_nodes.discard(key)
            size[key] = 1 + sum(size[id(kid)] for kid in kids)
            height[key] = 1 + max((height[id(kid)] for kid in kids), default=0)
            line = node.start_mark.line + 1
            if size[key] > MAX_NODES:
                raise _Refused(line, f"aliases expand to more than {MAX_NODES} values; refusing to expand")
            if height[key] > MAX_DEPTH:
                raise _Refused(line, f"aliases expand to nesting deeper than {MAX_DEPTH} levels")
            continue
        if key in size:
            continue
        if key in open_nodes:
            raise _Refused(node.start_mark.line + 1, "an alias refers to its own anchor (a cycle)")
        open_nodes.add(key)
        stack.append((node, True))
        stack.extend((kid, False) for kid in kids if id(kid) not in size)


class _Converter:
    """Turns a composed YAML graph into a fresh tree, expanding aliases (already measured)."""

    def __init__(self, file: str, loader: yaml.SafeLoader) -> None:
        self.file = file
        self.loader = loader
        self.issues: list[ManifestIssue] = []

    def _pos(self, node: Node) -> Position:
        return Position(self.file, node.start_mark.line + 1)

    def convert(self, node: Node, path: str) -> YNode:
        if isinstance(node, ScalarNode):
            return self._scalar(node, path)
        if node.tag not in (_MAP_TAG, _SEQ_TAG):
            self.issues.append(self._pos(node).issue(path, f"unsupported YAML tag {node.tag}; remove it"))
            return YScalar(None, self._pos(node), tainted=True)
        if isinstance(node, SequenceNode):
            return YSeq([self.convert(item, f"{path}[{i}]") for i, item in enumerate(node.value)], self._pos(node))
        assert isinstance(node, MappingNode)
        return self._mapping(node, path)

    def _scalar(self, node: ScalarNode, path: str) -> YScalar:
        try:
            value = self.loader.construct_object(node, deep=True)
        except yaml.constructor.ConstructorError as exc:
            self.issues.append(self._pos(node).issue(path, f"cannot read this value: {exc.problem}"))
            return YScalar(node.value, self._pos(node), tainted=True)
        return YScalar(value, self._pos(node))

    def _mapping(self, node: MappingNode, path: str) -> YMap:
        entries: dict[str, YNode] = {}
        first_line: dict[str, int] = {}
        inherited: dict[str, YNode] = {}
        for key_node, value_node in node.value:
            key_line = key_node.start_mark.line + 1
            if isinstance(key_node, ScalarNode) and key_node.tag == _MERGE_TAG:
                self._merge_key(value_node, path, inherited)
                continue
            if not isinstance(key_node, ScalarNode):
                self.issues.append(self._pos(key_node).issue(path, "a key must be a plain name, not a list or map"))
                continue
            key = key_node.value
            child_path = f"{path}.{key}" if path else key
            if key in first_line:
                message = f"duplicate key '{key}' (first at line {first_line[key]}); keep one"
                self.issues.append(self._pos(key_node).issue(child_path, message))
            first_line.setdefault(key, key_line)
            value = self.convert(value_node, child_path)
            value.pos = Position(self.file, key_line)
            entries[key] = value
        for key, value in inherited.items():
            entries.setdefault(key, value)
        return YMap(entries, self._pos(node))

    def _merge_key(self, value_node: Node, path: str, inherited: dict[str, YNode]) -> None:
        """``<<: *a`` or ``<<: [*a, *b]``: keys the mapping does not set come from the anchors, first wins."""
        sources = value_node.value if isinstance(value_node, SequenceNode) else [value_node]
        for source in sources:
            if not isinstance(source, MappingNode):
                message = "'<<' merges mappings only; use an alias of a mapping (<<: *name)"
                self.issues.append(self._pos(source).issue(path, message))
                continue
            for key, value in self._mapping(source, path).entries.items():
                inherited.setdefault(key, value)


# -- interpolation ------------------------------------------------------------------------------------


def interpolate(tree: YNode, lookup: Mapping[str, str], referenced: set[str] | None = None) -> list[ManifestIssue]:
    """Expand ``${...}`` in every string scalar of ``tree`` in place; return the problems found.

    The names referenced are added to ``referenced``, when given.
    """
    issues: list[ManifestIssue] = []
    names = referenced if referenced is not None else set()
    for path, scalar in _walk_scalars(tree, ""):
        if isinstance(scalar.value, str) and "$" in scalar.value:
            text, problems = _expand(scalar.value, lookup, names)
            if problems:
                scalar.tainted = True
                issues.extend(scalar.pos.issue(path, problem) for problem in problems)
            else:
                scalar.written, scalar.value = scalar.value, text
    return issues


def references(text: str) -> list[str]:
    """The variables ``text`` names as ${NAME} or ${NAME:-default}, in order, each once."""
    names: list[str] = []
    for match in _REFERENCE.finditer(text):
        name = (match.group("body") or "").partition(":-")[0]
        if _VARIABLE.fullmatch(name) and name not in names:
            names.append(name)
    return names


def _walk_scalars(node: YNode, path: str) -> Iterator[tuple[str, YScalar]]:
    if isinstance(node, YScalar):
        yield path, node
    elif isinstance(node, YSeq):
        for i, item in enumerate(node.items):
            yield from _walk_scalars(item, f"{path}[{i}]")
    else:
        for key, value in node.entries.items():
            yield from _walk_scalars(value, f"{path}.{key}" if path else key)


def _expand(text: str, lookup: Mapping[str, str], referenced: set[str]) -> tuple[str, list[str]]:
    problems: list[str] = []

    def replace(match: re.Match[str]) -> str:
        if match.group(0) == "$${":
            return "${"
        body = match.group("body")
        if body is None:
            problems.append("'${' without a closing '}'; write $${ for a literal ${")
            return match.group(0)
        name, has_default, default = body.partition(":-")
        referenced.add(name)
        if "${" in default:
            problems.append(
                f"'${{{body}}}': a default cannot hold another ${{...}}; set {name} or give a plain default"
            )
            return match.group(0)
        if not _VARIABLE.fullmatch(name):
            problems.append(f"'${{{body}}}' is not a variable reference; use ${{NAME}} or ${{NAME:-default}}")
            return match.group(0)
        if name == API_TOKEN_VARIABLE:
            problems.append(
                f"${{{name}}} is the Management API token, which never goes into a manifest: it would be sent to "
                "Capella as a value and shown in plans; remove the reference"
            )
            return match.group(0)
        value = lookup.get(name)
        if has_default and not value:
            return default
        if value is None:
            problems.append(
                f"variable {name} is not set; set it in the environment, pass --var {name}=..., "
                f"or give a default with ${{{name}:-...}}"
            )
            return match.group(0)
        return value

    return _REFERENCE.sub(replace, text), problems


# -- merging ------------------------------------------------------------------------------------------


def merge_sources(trees: Sequence[YMap]) -> tuple[YMap, list[ManifestIssue]]:
    """Merge file trees in order (see the module docstring); the first is the base."""
    issues: list[ManifestIssue] = []
    merged: YMap | None = None
    for tree in trees:
        base = merged if merged is not None else YMap({}, tree.pos)
        merged = _merge_map(base, tree, issues, top=True)
    return (merged if merged is not None else YMap({}, Position("", None))), issues


def _merge(base: YNode, overlay: YNode, issues: list[ManifestIssue]) -> YNode:
    if isinstance(base, YMap) and isinstance(overlay, YMap):
        return _merge_map(base, overlay, issues, top=False)
    return overlay


def _merge_map(base: YMap, overlay: YMap, issues: list[ManifestIssue], *, top: bool) -> YMap:
    entries = dict(base.entries)
    for key, value in overlay.entries.items():
        if top and key in MERGED_LISTS and isinstance(value, YSeq):
            earlier = entries.get(key)
            entries[key] = _merge_named(earlier if isinstance(earlier, YSeq) else None, value, key, issues)
        elif key in entries:
            entries[key] = _merge(entries[key], value, issues)
        else:
            entries[key] = value
    return YMap(entries, base.pos if base.entries else overlay.pos)


def _merge_named(base: YSeq | None, overlay: YSeq, list_name: str, issues: list[ManifestIssue]) -> YSeq:
    items: list[YNode] = list(base.items) if base is not None else []
    # Only entries from earlier files are merge targets: two entries of one name in the same file are a
    # duplicate for validation to report, not a merge.
    earlier = {id(item) for item in items}
    for index, entry in enumerate(overlay.items):
        path = f"{list_name}[{index}]"
        name = _entry_name(entry)
        delete = _delete_flag(entry, path, issues)
        if isinstance(entry, YMap) and DELETE_KEY in entry.entries:
            entry = YMap({k: v for k, v in entry.entries.items() if k != DELETE_KEY}, entry.pos)
        match = next(
            (
                i
                for i, item in enumerate(items)
                if id(item) in earlier and name is not None and _entry_name(item) == name
            ),
            None,
        )
        if delete:
            if match is None:
                what = f"'{name}'" if name is not None else "(no name given)"
                message = f"$delete: nothing named {what} in the files before this one; fix the name or drop it"
                issues.append(entry.pos.issue(path, message))
            else:
                del items[match]
        elif match is not None:
            items[match] = _merge(items[match], entry, issues)
        else:
            items.append(entry)
    return YSeq(items, overlay.pos)


def _entry_name(entry: YNode) -> str | None:
    if isinstance(entry, YMap):
        name = entry.entries.get("name")
        if isinstance(name, YScalar) and isinstance(name.value, str):
            return name.value
    return None


def _delete_flag(entry: YNode, path: str, issues: list[ManifestIssue]) -> bool:
    if not isinstance(entry, YMap) or DELETE_KEY not in entry.entries:
        return False
    flag = entry.entries[DELETE_KEY]
    if isinstance(flag, YScalar) and isinstance(flag.value, bool):
        return flag.value
    issues.append(flag.pos.issue(f"{path}.{DELETE_KEY}", "$delete takes true or false"))
    return False


# -- reading back -------------------------------------------------------------------------------------


def to_plain(node: YNode) -> Any:
    """The tree as plain dicts, lists and scalars, ready for validation."""
    if isinstance(node, YScalar):
        return node.value
    if isinstance(node, YSeq):
        return [to_plain(item) for item in node.items]
    return {key: to_plain(value) for key, value in node.entries.items()}


def locate(node: YNode, loc: Sequence[str | int]) -> YNode:
    """The deepest node along ``loc`` (a pydantic error location); stops where the tree stops."""
    for part in loc:
        if isinstance(node, YMap) and isinstance(part, str) and part in node.entries:
            node = node.entries[part]
        elif isinstance(node, YSeq) and isinstance(part, int) and 0 <= part < len(node.items):
            node = node.items[part]
        else:
            break
    return node
