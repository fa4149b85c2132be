"""Connection strings and key tokens, kept where applications and pipelines can pick them up.

The outputs file is the only place a key token is ever stored. It is rewritten whole on every
change, atomically (temporary file, fsync, rename) and created with mode 0600 from the first byte,
so a crash can never leave it truncated, and a token returned by the API is on disk before the
applier moves on. A writer killed between its fsync and its rename leaves the token only in its
temporary file: the next reader takes such tokens in, and the next writer saves them before it removes
the file.
"""

from __future__ import annotations

import contextlib
import glob
import json
import os
import re
import shlex
import tempfile
import threading
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from capella_deploy.errors import CapellaError
from capella_deploy.secrets import MASK, Secret, remember

try:
    import fcntl
except ImportError:  # Windows
    fcntl = None  # type: ignore[assignment]

OutputFormat = Literal["json", "dotenv"]
FORMAT_VERSION = 1


class OutputsError(CapellaError):
    pass


class Outputs:
    """The outputs document, held in memory and flushed to ``path`` after every change."""

    def __init__(self, path: Path, fmt: OutputFormat = "json", org_id: str | None = None) -> None:
        self.path = path
        self.format: OutputFormat = fmt
        self._org_id = org_id
        self._lock = threading.Lock()
        # Entries a record_key of this store put aside: another key's, with its token (see forget_key).
        self._displaced: dict[str, dict[str, Any]] = {}
        self._doc: dict[str, Any] = _empty(org_id)
        self._reload()

    @property
    def models(self) -> Mapping[str, Mapping[str, Any]]:
        return self.section("models")

    @property
    def api_keys(self) -> Mapping[str, Mapping[str, Any]]:
        return self.section("apiKeys")

    def section(self, key: str) -> Mapping[str, Mapping[str, Any]]:
        """The entries of one section (a kind's: "models", "providers"...), by resource name."""
        entries: Mapping[str, Mapping[str, Any]] = self._doc.get(key) or {}
        return entries

    def credential_versions(self) -> dict[str, int]:
        """Live id -> the ``credentialsVersion`` its credentials were last written with (see
        ``recorded_credential_versions``)."""
        return recorded_credential_versions(self._doc)

    def held_key_ids(self) -> frozenset[str]:
        """The ids of the keys whose token this file holds: the input the planner keeps keys by."""
        return frozenset(
            entry["id"] for entry in self.api_keys.values() if isinstance(entry.get("id"), str) and entry.get("token")
        )

    def token(self, key_name: str) -> Secret | None:
        entry = self.api_keys.get(key_name)
        value = entry.get("token") if entry else None
        return Secret(value) if isinstance(value, str) and value else None

    def record(self, section: str, name: str, **fields: Any) -> None:
        """Set the fields given (those not None) of a resource's entry in ``section``; never a secret. An entry of
        another id (the resource was replaced) is started afresh: none of its fields describe the new one."""

        def change(doc: dict[str, Any]) -> bool:
            entries = doc.setdefault(section, {})
            entry = dict(entries.get(name, {}))
            if "id" in fields and entry.get("id") not in (None, fields["id"]):
                entry = {}
            entry.update({k: v for k, v in fields.items() if v is not None})
            entries[name] = entry
            return True

        self._update(change)

    def forget(self, section: str, name: str, live_id: str | None = None) -> None:
        """Drop a resource's entry (only if it is for ``live_id``, when given: a successor's entry stays)."""

        def change(doc: dict[str, Any]) -> bool:
            entry = doc.get(section, {}).get(name)
            if entry is not None and (live_id is None or entry.get("id") == live_id):
                del doc[section][name]
                return True
            return False

        self._update(change)

    def record_model(self, name: str, **fields: Any) -> None:
        self.record("models", name, **fields)

    def record_key(self, name: str, *, key_id: str, token: Secret | None, **fields: Any) -> None:
        def change(doc: dict[str, Any]) -> bool:
            entry: dict[str, Any] = {"id": key_id, **{k: v for k, v in fields.items() if v is not None}}
            # A token that was lost in transit is recorded as missing, never invented or copied. But another
            # run of the same manifest may have written this very key's token already: that one stays.
            previous = doc["apiKeys"].get(name) or {}
            if token is None and previous.get("id") == key_id and previous.get("token"):
                return False
            if previous.get("id") != key_id and previous.get("token"):
                self._displaced[name] = dict(previous)
            entry["token"] = token.reveal() if token is not None else None
            doc["apiKeys"][name] = entry
            return True

        self._update(change)

    def save(self) -> None:
        """Write the document as it is: proves the file can be written before anything is created."""
        self._update(lambda doc: True)

    def forget_model(self, name: str, model_id: str | None = None) -> None:
        self.forget("models", name, model_id)

    def forget_key(self, name: str, key_id: str | None = None) -> None:
        """Drop the key's entry (only if it is for ``key_id``, when given). If this store's own record_key had put
        aside another key's entry with its token (two runs sharing the file, each making a key of the name, and
        this one giving its key up), that entry comes back: its token would be nowhere else."""

        def change(doc: dict[str, Any]) -> bool:
            entry = doc["apiKeys"].get(name)
            if entry is not None and (key_id is None or entry.get("id") == key_id):
                displaced = self._displaced.pop(name, None)
                if displaced is not None and displaced.get("id") != entry.get("id"):
                    doc["apiKeys"][name] = displaced
                else:
                    del doc["apiKeys"][name]
                return True
            return False

        self._update(change)

    def masked(self) -> dict[str, Any]:
        doc = json.loads(json.dumps(self._doc))
        for entry in doc["apiKeys"].values():
            if entry.get("token"):
                entry["token"] = MASK
        return doc  # type: ignore[no-any-return]

    def recorded(self) -> dict[str, Any] | None:
        """The document as the file holds it, tokens masked; None when there is no file yet (a fresh checkout,
        outputs sent elsewhere): then a plan has nothing to compare the outputs with."""
        return self.masked() if self.path.exists() else None

    def document(self) -> dict[str, Any]:
        return json.loads(json.dumps(self._doc))  # type: ignore[no-any-return]

    def _update(self, change: Callable[[dict[str, Any]], bool]) -> None:
        """Apply ``change`` to the file as it is now, and write the result if ``change`` says it changed.

        Read-modify-write under a lock on the directory, rather than a rewrite from memory: two runs given the
        same outputs path (no shared run lock: other working directories, other lock directories) would
        otherwise each erase the tokens the other had just written.
        """
        with self._lock, _directory_lock(self.path.parent):
            # Under the lock every temporary file beside the outputs is a dead writer's (a live one holds the
            # lock while its file exists): their tokens are saved with this write before the files go.
            leftovers, absorbed = self._reload()
            if change(self._doc) or absorbed:
                text = render_json(self._doc) if self.format == "json" else render_dotenv(self._doc)
                atomic_write(self.path, text)
            for leftover in leftovers:
                with contextlib.suppress(OSError):
                    leftover.unlink()

    def _reload(self) -> tuple[list[Path], bool]:
        """Read the file and take in the tokens of the temporary files beside it, oldest first.

        Returns those files, and whether a token was taken in.
        """
        self._load()
        leftovers = sorted(self.path.parent.glob(f".{glob.escape(self.path.name)}.*.tmp"), key=_modified)
        absorbed = [_absorb(self._doc, leftover) for leftover in leftovers]
        return leftovers, any(absorbed)

    def _load(self) -> None:
        if self.path.exists():
            doc = _read(self.path)
            recorded = doc.get("organizationId")
            # One file, one organization: mixing would hand one organization's tokens to the other's apps.
            if self._org_id is not None and recorded not in (None, self._org_id):
                raise OutputsError(
                    f"{self.path} holds the outputs of organization {recorded}, not {self._org_id}; "
                    "pass another --outputs path for this organization"
                )
            if self._org_id is not None:
                doc["organizationId"] = self._org_id
            for entry in doc["apiKeys"].values():
                if isinstance(entry, dict):
                    remember(entry.get("token"))
            self._doc = doc


def recorded_credential_versions(doc: Mapping[str, Any] | None) -> dict[str, int]:
    """Live id -> the ``credentialsVersion`` its credentials were last written with, for every entry of an outputs
    document that records one: what a credentials roll is seen against (credentials cannot be read back)."""
    versions: dict[str, int] = {}
    for section in SECTIONS:
        entries = doc.get(section.key) if doc is not None else None
        for entry in (entries or {}).values() if isinstance(entries, Mapping) else ():
            if not isinstance(entry, Mapping):
                continue
            version, live_id = entry.get("credentialsVersion"), entry.get("id")
            if isinstance(live_id, str) and isinstance(version, int) and not isinstance(version, bool):
                versions[live_id] = version
    return versions


def render_json(doc: Mapping[str, Any]) -> str:
    return json.dumps(doc, indent=2, sort_keys=True) + "\n"


@dataclass(frozen=True)
class Section:
    """One kind's section of the outputs (its key is the kind's manifest section), and its dotenv spelling."""

    key: str
    prefix: str  # of its dotenv variables: CAPELLA_MODEL_<NAME>_<SUFFIX>
    fields: tuple[tuple[str, str], ...]  # (field, dotenv suffix), in the order written
    json_fields: frozenset[str] = frozenset()  # read back from dotenv as JSON: objects, lists, numbers


SECTIONS = (
    Section(
        "models",
        "CAPELLA_MODEL_",
        (
            ("id", "ID"),
            ("status", "STATUS"),
            ("region", "REGION"),
            ("connectionString", "URL"),
            ("headers", "HEADERS"),  # the X-cb-* header profile, as a JSON object
        ),
        frozenset({"headers"}),
    ),
    Section(
        "apiKeys",
        "CAPELLA_KEY_",
        (
            ("id", "ID"),
            ("region", "REGION"),
            ("expiresAt", "EXPIRES_AT"),
            ("allowedModels", "ALLOWED_MODELS"),  # a JSON list of manifest model names, or ["*"]
            ("token", "TOKEN"),
        ),
        frozenset({"allowedModels"}),
    ),
    Section(
        "providers",
        "CAPELLA_PROVIDER_",
        (("id", "ID"), ("type", "TYPE"), ("credentialsVersion", "CREDENTIALS_VERSION")),
        frozenset({"credentialsVersion"}),
    ),
)
_SECTION = {section.key: section for section in SECTIONS}


def _empty(org_id: str | None) -> dict[str, Any]:
    # Every file has these two; a later kind's section appears once it has an entry.
    return {"version": FORMAT_VERSION, "organizationId": org_id, "models": {}, "apiKeys": {}}


DOTENV_HEADER = "# capella-deploy outputs"


def render_dotenv(doc: Mapping[str, Any]) -> str:
    # The comment before each group names the resource, so a later run can read the file back.
    lines = [DOTENV_HEADER, f"CAPELLA_ORG_ID={_quote(doc.get('organizationId') or '')}"]
    for section in SECTIONS:
        for name, entry in sorted(doc.get(section.key, {}).items()):
            lines.append(f"# {section.key} {name}")
            for field, suffix in section.fields:
                if entry.get(field) is not None:
                    lines.append(f"{section.prefix}{env_name(name)}_{suffix}={_quote(_text(entry[field]))}")
    return "\n".join(lines) + "\n"


def parse_dotenv(text: str) -> dict[str, Any]:
    doc = _empty(None)
    group: tuple[Section, dict[str, Any]] | None = None  # the section and entry the last heading named
    for line in text.splitlines():
        heading = line.split(" ", 2)
        if len(heading) == 3 and heading[0] == "#" and heading[1] in _SECTION:
            section = _SECTION[heading[1]]
            group = section, doc.setdefault(section.key, {}).setdefault(heading[2], {})
            continue
        var, sep, raw = line.partition("=")
        if not sep or line.startswith("#"):
            continue
        value = shlex.split(raw)[0] if raw else ""
        if var == "CAPELLA_ORG_ID":
            doc["organizationId"] = value or None
        elif group is not None:
            section, entry = group
            for field, suffix in section.fields:
                if var.endswith("_" + suffix):
                    entry[field] = json.loads(value) if field in section.json_fields else value
                    break
    return doc


def _text(value: Any) -> str:
    """A field as one line of text: mappings (the header profile) and lists as compact JSON."""
    if isinstance(value, (Mapping, list)):
        return json.dumps(value, sort_keys=True, separators=(",", ":"))
    return str(value)


def env_name(name: str) -> str:
    return "".join(ch if ch.isalnum() else "_" for ch in name).upper()


def _quote(value: str) -> str:
    return "'" + value.replace("'", "'\"'\"'") + "'"


def format_for(path: Path, explicit: str | None, default: OutputFormat = "json") -> OutputFormat:
    """The format to write: the one asked for, else dotenv for a `.env` path, else ``default``."""
    if explicit in ("json", "dotenv"):
        return explicit  # type: ignore[return-value]
    return "dotenv" if path.suffix == ".env" else default


def _read(path: Path) -> dict[str, Any]:
    """Read an outputs file in whichever format it is in, so a change of format converts it, never empties it."""
    try:
        text = path.read_text(encoding="utf-8")  # as atomic_write wrote it, whatever the locale
        if text.lstrip().startswith("{"):
            doc = json.loads(text)
        elif text.startswith(DOTENV_HEADER):
            doc = parse_dotenv(text)
        else:
            raise ValueError  # neither JSON nor capella-deploy dotenv; the message names the exception's type
    except (OSError, ValueError) as exc:
        raise OutputsError(
            f"{path}: cannot read the outputs file ({type(exc).__name__}); "
            "it holds key tokens that cannot be fetched again, so it is left untouched: repair or move it"
        ) from None
    if not isinstance(doc, dict) or not isinstance(doc.get("models"), dict) or not isinstance(doc.get("apiKeys"), dict):
        raise OutputsError(f"{path}: not a capella-deploy outputs file; move it away or pick another --outputs path")
    for section in SECTIONS:
        if not isinstance(doc.get(section.key, {}), dict):
            raise OutputsError(f"{path}: its {section.key!r} is not a mapping; move the file away or repair it")
    return doc


@contextlib.contextmanager
def _directory_lock(directory: Path) -> Iterator[None]:
    """An exclusive ``flock`` on the directory itself, so no lock file is left beside the outputs."""
    directory.mkdir(parents=True, exist_ok=True)
    if fcntl is None:  # no flock on this platform: runs sharing one outputs file are not protected
        yield
        return
    fd = os.open(directory, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing releases the lock


def _modified(path: Path) -> float:
    try:
        return path.stat().st_mtime
    except OSError:
        return 0.0


def _absorb(doc: dict[str, Any], leftover: Path) -> bool:
    """Take into ``doc`` each key token of ``leftover`` for a key id ``doc`` lacks or holds without a token.

    A leftover is the document a killed writer was about to put in place: what the file held then, and one
    change. No write has happened since (each write removes leftovers), so its key entries are the newer.
    """
    try:
        text = leftover.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return False
    held = {entry.get("id") for entry in doc["apiKeys"].values() if entry.get("token")}
    changed = False
    for name, entry in _key_entries(text).items():
        if entry["id"] not in held:
            doc["apiKeys"][name] = entry
            held.add(entry["id"])
            changed = True
    return changed


# A key entry as render_json writes it (keys sorted, so "id" comes before "token"); used only on a file cut
# short, where nothing after the cut can be parsed.
_JSON_STRING = r'"((?:[^"\\]|\\.)*)"'
_JSON_KEY_ENTRY = re.compile(_JSON_STRING + r":\s*\{(?=(?P<body>[^{}]*))")
_JSON_FIELD = re.compile(_JSON_STRING + r":\s*" + _JSON_STRING)


def _key_entries(text: str) -> dict[str, dict[str, Any]]:
    """The key entries holding an id and a token in a leftover, complete or cut short, in either format."""
    entries: dict[str, Any] = {}
    if text.startswith(DOTENV_HEADER):
        with contextlib.suppress(ValueError):
            entries = parse_dotenv(_complete_lines(text))["apiKeys"]
    else:
        try:
            doc = json.loads(text)
            entries = doc["apiKeys"] if isinstance(doc, dict) and isinstance(doc.get("apiKeys"), dict) else {}
        except ValueError:
            section = text.split('\n  "models": {')[0]  # the top-level section after apiKeys
            for match in _JSON_KEY_ENTRY.finditer(section):
                with contextlib.suppress(ValueError):
                    fields = {json.loads(f'"{k}"'): json.loads(f'"{v}"') for k, v in _JSON_FIELD.findall(match["body"])}
                    entries[json.loads(f'"{match[1]}"')] = fields
    return {
        name: dict(entry)
        for name, entry in entries.items()
        if isinstance(name, str)
        and isinstance(entry, dict)
        and isinstance(entry.get("id"), str)
        and isinstance(entry.get("token"), str)
        and entry["token"]
    }


def _complete_lines(text: str) -> str:
    """Drop a last line cut short: its value may be a token's first half."""
    return text.rsplit("\n", 1)[0]  # after a last newline, that is only the empty string


def atomic_write(path: Path, text: str) -> None:
    """Replace ``path`` with ``text``: never a partial file, never readable by others."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)  # mode 0600
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
