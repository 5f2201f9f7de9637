"""mkdocs hooks (mkdocs.yml ``hooks:``): the README as the home page, repository files that
the pages link to, and a check that the API reference covers ``aiotlspool.__all__``.

The Markdown files are also read on GitHub, where a link goes to any file of the repository:
the README links to ``docs/usage.md``, a page to ``../benchmarks/results/sequential.png``. For
the site:

- ``index.md`` is generated from README.md, its links to ``docs/...`` made site-relative;
- a link (or image) to a file of the repository outside ``docs/`` is served from a copy under
  ``_repository/`` (``../README.md`` goes to the home page);
- every name in ``aiotlspool.__all__`` must have a ``::: aiotlspool.NAME`` block in
  ``docs/reference/``; a missing one is a warning, so ``mkdocs build --strict`` fails;
- the Sphinx roles of the docstrings (``:class:`~aiotlspool.Pool```) are shown as code
  (``Pool``): mkdocstrings renders Markdown and would print the role.

Only this repository's files are read; nothing is fetched or imported.
"""

from __future__ import annotations

import ast
import logging
import posixpath
import re
from pathlib import Path
from typing import Any

from mkdocs.structure.files import File, Files

log = logging.getLogger("mkdocs.hooks.aiotlspool")

ROOT = Path(__file__).resolve().parent.parent
COPIES = "_repository"
# An inline link or image target: "](target)" or "](target#anchor)" (no title, no spaces).
_LINK = re.compile(r"\]\(([^)\s#]+)(#[^)\s]*)?\)")
_API_BLOCK = re.compile(r"^:::\s+aiotlspool\.(\w+)\s*$", re.MULTILINE)
# A docstring's Sphinx role as mkdocstrings renders it: ":meth:<code>~a.b.name</code>".
_ROLE = re.compile(r":(?:class|meth|func|attr|mod|exc|data|obj):<code>(~?)([^<]*)</code>")


def _repository_target(page: str, target: str) -> str | None:
    """The repository path a relative link of ``page`` (a repository path) points to."""
    if "://" in target or target.startswith(("/", "mailto:")):
        return None
    path = posixpath.normpath(posixpath.join(posixpath.dirname(page), target))
    if path.startswith("..") or not (ROOT / path).is_file():
        return None
    return path


def _site_target(path: str) -> str | None:
    """Where a repository file is on the site (relative to docs/); None: leave the link."""
    if path == "README.md":
        return "index.md"
    if path.startswith("docs/"):
        return path[len("docs/") :]
    return f"{COPIES}/{path}"


def _rewrite(markdown: str, page: str, site_page: str, copies: set[str] | None) -> str:
    """Point the links of ``page`` (repository path) at the site; collect files to copy."""

    def replace(match: re.Match[str]) -> str:
        target, anchor = match.group(1), match.group(2) or ""
        path = _repository_target(page, target)
        if path is None or (path.startswith("docs/") and page.startswith("docs/")):
            return match.group(0)  # not a repository file, or a page-to-page link as it is
        site = _site_target(path)
        if site is None:
            return match.group(0)
        if site.startswith(f"{COPIES}/") and copies is not None:
            copies.add(path)
        relative = posixpath.relpath(site, posixpath.dirname(site_page) or ".")
        return f"]({relative}{anchor})"

    return _LINK.sub(replace, markdown)


def on_files(files: Files, config: Any) -> Files:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    copies: set[str] = set()
    home = _rewrite(readme, "README.md", "index.md", copies)
    files.append(File.generated(config, "index.md", content=home))
    for page in files.documentation_pages():
        if page.abs_src_path is None:
            continue
        text = Path(page.abs_src_path).read_text(encoding="utf-8")
        _rewrite(text, f"docs/{page.src_uri}", page.src_uri, copies)
    for path in sorted(copies):
        files.append(File.generated(config, f"{COPIES}/{path}", abs_src_path=str(ROOT / path)))
    _check_reference(files)
    return files


def on_page_markdown(markdown: str, page: Any, config: Any, files: Files) -> str:
    if page.file.src_uri == "index.md":
        return markdown  # the README, rewritten when generated
    return _rewrite(markdown, f"docs/{page.file.src_uri}", page.file.src_uri, None)


def on_page_content(html: str, page: Any, config: Any, files: Files) -> str:
    def code(match: re.Match[str]) -> str:
        name = match.group(2).rsplit(".", 1)[-1] if match.group(1) else match.group(2)
        return f"<code>{name}</code>"

    return _ROLE.sub(code, html)


def _public_names() -> list[str]:
    tree = ast.parse((ROOT / "aiotlspool" / "__init__.py").read_text(encoding="utf-8"))
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(
            isinstance(target, ast.Name) and target.id == "__all__" for target in node.targets
        ):
            return [str(ast.literal_eval(element)) for element in node.value.elts]  # type: ignore[attr-defined]
    return []


def _check_reference(files: Files) -> None:
    documented: set[str] = set()
    for page in files.documentation_pages():
        if page.src_uri.startswith("reference/") and page.abs_src_path is not None:
            documented.update(_API_BLOCK.findall(Path(page.abs_src_path).read_text("utf-8")))
    for name in _public_names():
        if name not in documented:
            log.warning(
                "aiotlspool.%s is in aiotlspool.__all__ but not in the API reference: add "
                "'::: aiotlspool.%s' to a page of docs/reference/",
                name,
                name,
            )
