"""Caffe names in three roles: shown in messages, checked as text, and mapped to module attributes.

* :func:`shown`: a name as it appears in an error message, cut when long, so that a 3,000-character
  layer name gives a readable line instead of a 5,000-character one.
* :func:`non_utf8_field`: Caffe's ``string`` fields may hold any bytes on the wire (C++ protobuf does
  not check proto2 strings); Python's protobuf hands such a value back as ``bytes``, which no later
  code expects. The reader and the prototxt parser refuse them, naming the field.
* :func:`module_attrs`: every Caffe layer becomes a submodule of the net under an attribute name.
  Ordinary names are kept as they are (``conv1``, ``inception_3a/1x1``), so ``named_modules()``
  speaks Caffe. A name that cannot be an attribute (it contains ``.``, which ``nn.Module`` reserves
  for paths, or it equals an attribute of the net such as ``forward``, ``nodes``, ``training``) is
  escaped, and the mapping is one to one: ``c.1`` and ``c_1`` never share a module.
"""
from __future__ import annotations

from collections.abc import Callable, Iterable

SHOWN_CHARS = 60  # longest name shown whole in a message
PATH_CHARS = 300  # longest file path shown whole (``shown(path, PATH_CHARS)``)
LISTED_ITEMS = 8  # longest list of names shown whole in a message


def shown(name, limit: int = SHOWN_CHARS) -> str:
    """``repr(name)``, cut in the middle with the full length noted when longer than ``limit``."""
    text = name if isinstance(name, str) else str(name)
    if len(text) <= limit:
        return repr(text)
    half = limit // 2
    return f"{text[:half]!r}...{text[-half:]!r} ({len(text):,} characters)"


def shown_path(path) -> str:
    """A file path in a message: as :func:`shown`, whole up to :data:`PATH_CHARS` characters."""
    return shown(str(path), PATH_CHARS)


def cut(text: str, limit: int = 300) -> str:
    """Free text (a parser's message) cut in the middle when longer than ``limit``."""
    if len(text) <= limit:
        return text
    half = limit // 2
    return f"{text[:half]} ... {text[-half:]} ({len(text):,} characters)"


def bare(name) -> str:
    """A name as it is when short and printable (no quotes), else as :func:`shown` quotes and cuts it
    (a newline or other control character in a name would break the one-line message)."""
    text = name if isinstance(name, str) else str(name)
    return text if len(text) <= SHOWN_CHARS and text.isprintable() else shown(text)


def listed(names: Iterable, limit: int = LISTED_ITEMS, show: Callable[[object], str] = bare) -> str:
    """``a, b, c`` of names as ``show`` shows them (:func:`bare`), cut after ``limit`` items."""
    items = list(names)
    head = ", ".join(show(n) for n in items[:limit])
    return head + (f", ... ({len(items) - limit} more)" if len(items) > limit else "")


def non_utf8_field(msg, path: str = "") -> str | None:
    """The dotted path of the first ``string`` field of ``msg`` (recursively) that is not UTF-8 text,
    e.g. ``top[1]``; ``None`` when every text field is valid."""
    for field, value in msg.ListFields():
        name = f"{path}.{field.name}" if path else field.name
        if field.type not in (field.TYPE_STRING, field.TYPE_MESSAGE):
            continue
        single = isinstance(value, (str, bytes)) or hasattr(value, "ListFields")
        for i, item in enumerate([value] if single else value):
            where = name if single else f"{name}[{i}]"
            if isinstance(item, bytes):
                return where
            if hasattr(item, "ListFields"):
                found = non_utf8_field(item, where)
                if found:
                    return found
    return None


def module_attrs(names: Iterable[str], reserved: Iterable[str]) -> dict[str, str]:
    """``{Caffe layer name: attribute name}``, one to one, for the layers ``names`` (unique).

    A name is its own attribute when it is not empty, has no ``.`` and is not in ``reserved`` (the
    attributes the net already has). Any other name becomes ``layer_<name with '.' as '_'>``, with
    ``_2``, ``_3``... appended until it collides with nothing: neither a reserved attribute, nor
    another layer's name, nor an attribute already given. Ordinary names are claimed first, so
    whether ``c_1`` keeps its own name does not depend on a ``c.1`` elsewhere in the net.
    """
    names = list(names)
    reserved = set(reserved)
    out = {n: n for n in names if n and "." not in n and n not in reserved}
    taken = reserved | set(out)
    for n in names:
        if n in out:
            continue
        base = "layer_" + n.replace(".", "_")
        attr, i = base, 1
        while attr in taken:
            i += 1
            attr = f"{base}_{i}"
        out[n] = attr
        taken.add(attr)
    return out
