"""Griffe extension for the API reference: jaxseq's Sphinx-style docstring markup as Markdown.

The docstrings are Google style (``Args:``, ``Returns:``, ``Raises:``) but use a few
reStructuredText conventions that Markdown does not know. Before mkdocstrings renders
them, this extension rewrites:

* roles such as ``:func:`make_cell```, ``:class:`~jaxseq.data.dataset.Dataset``` or
  ``:data:`DATA_AXIS``` into cross-references. A name is resolved in the scope of the
  documented object (its module's imports included), so a short name links to the right
  jaxseq object; a name inside ``jaxseq`` that does not exist is left as a
  cross-reference that cannot be found, which ``mkdocs build --strict`` reports as an
  error. Names outside jaxseq (``jax.sharding.Mesh``, ``os.replace``, builtins) become
  inline code, since the site is built offline without other projects' inventories.
* ``a, b: description`` in an ``Args:`` or ``Attributes:`` section (several names
  documented together, as Sphinx's napoleon allows) into one entry per name, each with
  the shared description.
* ``text::`` before an indented literal block into ``text:`` (the indented block is
  already a Markdown code block).
* ``#:`` comments above a module or class attribute into that attribute's docstring (the
  Sphinx autodoc convention used for constants such as ``DATA_AXIS``).

Loaded from ``mkdocs.yml`` (``plugins.mkdocstrings.handlers.python.options.extensions``).
"""

from __future__ import annotations

import builtins
import re
from typing import Any

import griffe

_ROLE = re.compile(r":(?:py:)?(?:func|class|meth|data|mod|attr|exc|obj|const):`(~?)([\w.]+)`")
_LITERAL = re.compile(r"::[ \t]*$", re.MULTILINE)
_PACKAGE = "jaxseq"
_SECTION = re.compile(r"^(\s*)(Args|Arguments|Parameters|Attributes):\s*$")
_GROUPED = re.compile(r"^(\s+)(\*{0,2}\w+(?:,\s*\*{0,2}\w+)+)(\s*\([^)]*\))?:(.*)$")


def _target(obj: griffe.Object, name: str) -> str | None:
    """The full jaxseq path ``name`` refers to from ``obj``, or None if it is outside jaxseq."""
    first, _, rest = name.partition(".")
    if first == _PACKAGE:
        return name
    try:
        path = obj.resolve(first)
    except griffe.NameResolutionError:
        if "." in name or hasattr(builtins, first):
            return None  # an external dotted name or a builtin: plain code
        return name  # unknown bare name: an unresolvable reference, reported by --strict
    full = f"{path}.{rest}" if rest else path
    return full if full.split(".", 1)[0] == _PACKAGE else None


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip())


def _split_grouped(text: str) -> str:
    """Expand ``a, b: description`` entries of Args/Attributes sections, one per name."""
    lines = text.split("\n")
    out: list[str] = []
    section_indent: int | None = None
    i = 0
    while i < len(lines):
        line = lines[i]
        header = _SECTION.match(line)
        if header:
            section_indent = len(header.group(1))
        elif line.strip() and section_indent is not None and _indent(line) <= section_indent:
            section_indent = None
        grouped = _GROUPED.match(line) if section_indent is not None else None
        if grouped and _indent(line) > section_indent:
            indent, names, kind, first = grouped.groups()
            body = [first]
            i += 1
            while i < len(lines) and (not lines[i].strip() or _indent(lines[i]) > len(indent)):
                body.append(lines[i])
                i += 1
            while body and not body[-1].strip():
                body.pop()
                i -= 1
            for name in (n.strip() for n in names.split(",")):
                out.append(f"{indent}{name}{kind or ''}:{body[0]}")
                out.extend(body[1:])
            continue
        out.append(line)
        i += 1
    return "\n".join(out)


def _markdown(obj: griffe.Object, text: str) -> str:
    def role(match: re.Match[str]) -> str:
        short, name = match.group(1), match.group(2)
        label = name.rsplit(".", 1)[-1] if short else name
        target = _target(obj, name)
        return f"[`{label}`][{target}]" if target else f"`{label}`"

    return _LITERAL.sub(":", _ROLE.sub(role, _split_grouped(text)))


def _comment_docstring(attr: griffe.Attribute) -> str | None:
    """The ``#:`` comment lines right above ``attr``'s definition, joined, or None."""
    if attr.lineno is None or attr.filepath is None or isinstance(attr.filepath, list):
        return None
    if attr.filepath not in attr.lines_collection:
        return None
    lines = attr.lines_collection[attr.filepath]
    comment: list[str] = []
    index = attr.lineno - 2  # the line above, 0-based
    while index >= 0 and lines[index].strip().startswith("#:"):
        comment.insert(0, lines[index].strip()[2:].strip())
        index -= 1
    return "\n".join(comment) or None


class SphinxMarkup(griffe.Extension):
    """Rewrite Sphinx roles and literal-block markers, and read ``#:`` attribute comments."""

    def on_attribute_instance(self, *, attr: griffe.Attribute, **kwargs: Any) -> None:
        if attr.docstring is None:
            text = _comment_docstring(attr)
            if text:
                attr.docstring = griffe.Docstring(text, lineno=attr.lineno, parent=attr)

    def on_object(self, *, obj: griffe.Object, **kwargs: Any) -> None:
        if obj.docstring is not None and obj.docstring.parent is obj:
            obj.docstring.value = _markdown(obj, obj.docstring.value)
