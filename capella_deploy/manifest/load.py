"""Loading: manifest files in, one ``Manifest`` out, or one ``ManifestError`` listing every problem.

``read_manifest`` reads the files (``yamlsource``: YAML, ``${VAR}`` interpolation, overlays), validates the
result against the models (``spec``) and the cross-field rules (``rules``), and places each problem at the file
and line that wrote the value, as ``file:line: path: message`` (``messages``).
"""

from __future__ import annotations

import difflib
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from pydantic import (
    ValidationError,
)

from capella_deploy.manifest.fields import Loc, format_loc
from capella_deploy.manifest.messages import describe
from capella_deploy.manifest.rules import cross_field_problems
from capella_deploy.manifest.spec import DEFER_CROSS_CHECKS, Manifest
from capella_deploy.manifest.yamlsource import (
    ManifestIssue,
    YMap,
    YNode,
    YScalar,
    locate,
    merge_sources,
    read_source,
    references,
    to_plain,
)


class ManifestError(Exception):
    """Every problem found in the manifest files, in the order the files were given, then by line."""

    def __init__(self, issues: Sequence[ManifestIssue], files: Sequence[str] = ()) -> None:
        rank = {name: index for index, name in enumerate(files)}
        self.issues: list[ManifestIssue] = sorted(
            issues, key=lambda i: (rank.get(i.file, len(rank)), i.file, i.line or 0, i.path)
        )
        super().__init__("\n".join(str(issue) for issue in self.issues))


@dataclass(frozen=True)
class LoadedManifest:
    """A manifest with what its files said beyond the values: which variables they use, who set what."""

    manifest: Manifest
    # The names the files reference as ${NAME}, whether or not a value was found.
    variables_used: frozenset[str]
    _tree: YMap

    def file_that_set(self, *loc: str | int) -> str | None:
        """The file that supplied the value at ``loc`` (e.g. "outputs", "path"); None when it is a default."""
        node: YNode = self._tree
        for part in loc:
            found = locate(node, (part,))
            if found is node:
                return None
            node = found
        return node.pos.file

    def issue_at(self, loc: Loc, message: str) -> ManifestIssue:
        """A problem with the value at ``loc`` (e.g. ("models", 0, "region")), at the file and line that set it."""
        return locate(self._tree, loc).pos.issue(format_loc(loc), message)


def load_manifest(
    paths: Sequence[str | Path],
    *,
    variables: Mapping[str, str] | None = None,
    environ: Mapping[str, str] | None = None,
    environment: str | None = None,
) -> Manifest:
    """Read, merge, interpolate and validate manifest files; raise ``ManifestError`` listing every problem.

    ``variables`` (``--var K=V``) win over ``environ``, which defaults to ``os.environ``; a variable the files
    never reference is a problem (a misspelt name would otherwise be ignored and its default used).
    ``environment`` (``--environment``) sets the manifest's environment; a manifest that names another one is
    an error.
    """
    return read_manifest(paths, variables=variables, environ=environ, environment=environment).manifest


def read_manifest(
    paths: Sequence[str | Path],
    *,
    variables: Mapping[str, str] | None = None,
    environ: Mapping[str, str] | None = None,
    environment: str | None = None,
) -> LoadedManifest:
    """``load_manifest``, keeping what the files said about variables and where each value came from."""
    if not paths:
        raise ManifestError([ManifestIssue("(no file)", None, "", "no manifest given; pass one or more -f FILE")])
    lookup = dict(os.environ if environ is None else environ)
    lookup.update(variables or {})

    issues: list[ManifestIssue] = []
    trees: list[YMap] = []
    referenced: set[str] = set()
    unreadable = False
    for path in paths:
        source = read_source(Path(path), lookup)
        issues.extend(source.issues)
        referenced |= source.referenced
        if source.tree is None:
            unreadable = True
        else:
            trees.append(source.tree)
    if unreadable:  # validating what is left would only add noise about the missing parts
        raise ManifestError(issues, [str(path) for path in paths])
    issues.extend(_unused_variables(variables or {}, referenced, [str(path) for path in paths]))

    tree, merge_issues = merge_sources(trees)
    issues.extend(merge_issues)
    issues.extend(_empty_organization(tree))
    data = to_plain(tree)
    manifest: Manifest | None = None
    try:
        manifest = Manifest.model_validate(data, context={DEFER_CROSS_CHECKS: True})
    except ValidationError as exc:
        errors = exc.errors()
        # A list whose every item is invalid is also "too short" (the count is of valid items): the items'
        # own messages say what is wrong, the count would only add a puzzle.
        with_bad_items = {tuple(e["loc"][:-1]) for e in errors if e["loc"] and isinstance(e["loc"][-1], int)}
        for error in errors:
            if error["type"] == "too_short" and tuple(error["loc"]) in with_bad_items:
                continue
            issue = _issue_at(tree, error["loc"], describe(error))
            if issue is not None:
                issues.append(issue)
    for loc, message in cross_field_problems(data):
        issue = _issue_at(tree, loc, message)
        if issue is not None:
            issues.append(issue)
    if environment is not None and manifest is not None and manifest.environment not in (None, environment):
        issue = _issue_at(
            tree,
            ("environment",),
            f"this manifest is for environment '{manifest.environment}', not '{environment}' (--environment)",
        )
        issues.extend([issue] if issue is not None else [])
    if issues or manifest is None:
        raise ManifestError(issues, [str(path) for path in paths])
    if environment is not None:
        manifest = manifest.model_copy(update={"environment": environment})
    return LoadedManifest(manifest, frozenset(referenced), tree)


def _empty_organization(tree: YMap) -> list[ManifestIssue]:
    """An organizationId the files set that came out empty: without this, the run would fall back to
    CAPELLA_ORG_ID or the token's only organization, which may be another organization than the one meant."""
    node = tree.entries.get("organizationId")
    if not isinstance(node, YScalar) or node.tainted:
        return []
    if node.value is not None and not (isinstance(node.value, str) and not node.value.strip()):
        return []
    node.tainted = True  # the validation error about the same value would only repeat this less clearly
    names = references(node.written or "")
    if names:
        message = (
            "the manifest sets organizationId but it is empty after interpolation: "
            f"set {' or '.join(names)} or remove the field"
        )
    else:
        message = (
            "the manifest sets organizationId but it is empty: write the organization id, or remove the field "
            "to use CAPELLA_ORG_ID or the token's only organization"
        )
    return [node.pos.issue("organizationId", message)]


def _unused_variables(variables: Mapping[str, str], referenced: set[str], files: Sequence[str]) -> list[ManifestIssue]:
    issues = []
    for name in sorted(set(variables) - referenced):
        close = difflib.get_close_matches(name, sorted(referenced), n=1)
        hint = f"; did you mean {close[0]}?" if close else f" (it uses: {', '.join(sorted(referenced)) or 'none'})"
        issues.append(
            ManifestIssue(f"--var {name}", None, "", f"no manifest file ({', '.join(files)}) uses ${{{name}}}{hint}")
        )
    return issues


def _issue_at(tree: YNode, loc: Loc, message: str) -> ManifestIssue | None:
    node = locate(tree, loc)
    if isinstance(node, YScalar) and node.tainted:
        return None  # the interpolation problem at this spot is already reported
    return node.pos.issue(format_loc(loc), message)
