"""Chain specs in three forms that round-trip: dict, YAML/JSON file, and the compact string.

Compact string grammar::

    pipeline := item ("|" item)*
    item     := NAME [ "(" [arg ("," arg)*] ")" ]
    arg      := [NAME "="] value
    value    := NUMBER | STRING | true | false | null | "[" [value ("," value)*] "]" | pipeline

Example: ``jpeg(quality=75) | bit_depth(bits=5) | choice(k=1, transforms=[median(size=3), flip()])``.
A bare NAME that is a preset (``fencebox-default``) expands to the preset's chain.
Dict form: ``{"name": "jpeg", "quality": 75}``; a chain is ``{"name": "chain", "transforms": [...]}``.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from fencebox.errors import SpecError
from fencebox.presets import list_presets, preset_info
from fencebox.registry import all_transforms, get_transform
from fencebox.transforms.base import Transform
from fencebox.transforms.chain import Chain

# ----- parsing the compact form ---------------------------------------------------------------------

_TOKEN = re.compile(
    r"""
    (?P<ws>\s+)
  | (?P<number>[-+]?(?:\d+\.\d*|\.\d+|\d+)(?:[eE][-+]?\d+)?)
  | (?P<string>"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*')
  | (?P<name>[A-Za-z_][A-Za-z0-9_.\-]*)
  | (?P<punct>[()\[\],=|])
    """,
    re.VERBOSE,
)


MAX_NESTING = 100
"""Deepest bracket/parenthesis nesting the compact form accepts: specs may come from HTTP clients
(chain overrides), and the recursive parser must answer SpecError, never RecursionError."""


@dataclass
class _Call:
    name: str
    pos: int
    args: list[Any] = field(default_factory=list)
    kwargs: dict[str, Any] = field(default_factory=dict)
    has_parens: bool = False


@dataclass
class _Pipeline:
    items: list[_Call]
    pos: int


def _syntax_error(text: str, pos: int, message: str) -> SpecError:
    return SpecError(f"bad chain spec at position {pos}: {message}\n  {text}\n  {' ' * pos}^")


class _Parser:
    def __init__(self, text: str) -> None:
        self.text = text
        self.tokens: list[tuple[str, str, int]] = []
        i = depth = 0
        while i < len(text):
            m = _TOKEN.match(text, i)
            if not m:
                raise _syntax_error(text, i, f"unexpected character {text[i]!r}")
            kind = m.lastgroup or ""
            if kind != "ws":
                self.tokens.append((kind, m.group(), i))
            if kind == "punct" and m.group() in "([":
                depth += 1
                if depth > MAX_NESTING:
                    raise _syntax_error(text, i, f"nested more than {MAX_NESTING} brackets deep")
            elif kind == "punct" and m.group() in ")]":
                depth -= 1
            i = m.end()
        self.tokens.append(("end", "", len(text)))
        self.i = 0

    def peek(self) -> tuple[str, str, int]:
        return self.tokens[self.i]

    def peek_next(self) -> tuple[str, str, int]:
        return self.tokens[min(self.i + 1, len(self.tokens) - 1)]

    def take(self) -> tuple[str, str, int]:
        tok = self.tokens[self.i]
        self.i += 1
        return tok

    def expect(self, value: str) -> None:
        kind, val, pos = self.take()
        if val != value or kind not in ("punct",):
            found = "end of spec" if kind == "end" else repr(val)
            raise _syntax_error(self.text, pos, f"expected {value!r}, found {found}")

    def parse(self) -> _Pipeline:
        pipe = self.pipeline()
        kind, val, pos = self.peek()
        if kind != "end":
            raise _syntax_error(self.text, pos, f"unexpected {val!r} after the end of the chain")
        return pipe

    def pipeline(self) -> _Pipeline:
        start = self.peek()[2]
        items = [self.item()]
        while self.peek()[1] == "|" and self.peek()[0] == "punct":
            self.take()
            items.append(self.item())
        return _Pipeline(items, start)

    def item(self) -> _Call:
        kind, val, pos = self.take()
        if kind != "name":
            found = "end of spec" if kind == "end" else repr(val)
            raise _syntax_error(self.text, pos, f"expected a transform name, found {found}")
        call = _Call(val, pos)
        if self.peek()[1] == "(" and self.peek()[0] == "punct":
            self.take()
            call.has_parens = True
            if self.peek()[1] != ")":
                while True:
                    self.argument(call)
                    if self.peek()[1] == ",":
                        self.take()
                        continue
                    break
            self.expect(")")
        return call

    def argument(self, call: _Call) -> None:
        kind, val, pos = self.peek()
        nxt = self.peek_next()
        if kind == "name" and nxt[1] == "=" and nxt[0] == "punct":
            self.take()
            self.take()
            if val in call.kwargs:
                raise _syntax_error(self.text, pos, f"parameter {val!r} given twice")
            call.kwargs[val] = self.value()
        else:
            if call.kwargs:
                raise _syntax_error(self.text, pos, "positional argument after a keyword argument")
            call.args.append(self.value())

    def value(self) -> Any:
        kind, val, pos = self.peek()
        if kind == "number":
            self.take()
            try:
                return float(val) if any(ch in val for ch in ".eE") else int(val)
            except ValueError:  # more digits than Python converts (sys.get_int_max_str_digits)
                raise _syntax_error(self.text, pos, f"number too long ({len(val)} digits)") from None
        if kind == "string":
            self.take()
            if not val.startswith('"'):
                return val[1:-1].replace("\\'", "'")
            try:
                return json.loads(val)
            except json.JSONDecodeError as exc:
                raise _syntax_error(self.text, pos, f"bad string {val}: {exc.msg}") from None
        if kind == "punct" and val == "[":
            self.take()
            items: list[Any] = []
            if self.peek()[1] != "]":
                while True:
                    items.append(self.value())
                    if self.peek()[1] == ",":
                        self.take()
                        continue
                    break
            self.expect("]")
            return items
        if kind == "name":
            lowered = val.lower()
            nxt = self.peek_next()
            if lowered in ("true", "false", "null", "none") and nxt[1] not in ("(", "|"):
                self.take()
                return {"true": True, "false": False}.get(lowered)
            pipe = self.pipeline()
            return pipe
        found = "end of spec" if kind == "end" else repr(val)
        raise _syntax_error(self.text, pos, f"expected a value, found {found}")


def parse_compact(text: str) -> dict[str, Any]:
    """Parse the compact string form into the dict form (a chain), raising SpecError with the position."""
    if not text.strip():
        raise SpecError("empty chain spec; use 'none' for no purification")
    return _pipeline_to_dict(_Parser(text).parse(), text, top=True)


def _pipeline_to_dict(pipe: _Pipeline, text: str, top: bool = False) -> dict[str, Any]:
    items = [_call_to_dict(c, text) for c in pipe.items]
    if len(items) == 1 and not top:
        return items[0]
    return {"name": "chain", "transforms": items}


def _call_to_dict(call: _Call, text: str) -> dict[str, Any]:
    registry = all_transforms()
    if call.name not in registry and not call.has_parens and call.name in list_presets():
        return preset_spec(call.name)
    try:
        cls = get_transform(call.name)
    except SpecError as exc:
        raise SpecError(f"{exc} at position {call.pos}\n  {text}\n  {' ' * call.pos}^") from None
    declared = [p for p in cls.params]
    if len(call.args) > len(declared):
        raise _syntax_error(text, call.pos, f"{call.name} takes at most {len(declared)} positional arguments")
    out: dict[str, Any] = {"name": call.name}
    for p, v in zip(declared, call.args, strict=False):
        if p.name in call.kwargs:
            raise _syntax_error(text, call.pos, f"{call.name}: parameter {p.name!r} given twice")
        out[p.name] = v
    out.update(call.kwargs)
    kinds = {p.name: p.kind for p in declared}
    for key, v in list(out.items()):
        if key == "name":
            continue
        kind = kinds.get(key)
        if kind == "transforms":
            vals = v if isinstance(v, list) else [v]
            out[key] = [_as_transform_dict(x, text, key) for x in vals]
        elif kind == "transform":
            out[key] = _as_transform_dict(v, text, key)
        else:
            out[key] = _plain_value(v, text, call, key)
    return out


def _as_transform_dict(v: Any, text: str, key: str) -> dict[str, Any]:
    if isinstance(v, _Pipeline):
        return _pipeline_to_dict(v, text)
    raise SpecError(f"parameter {key!r} expects transforms, got {v!r}")


def _plain_value(v: Any, text: str, call: _Call, key: str) -> Any:
    if isinstance(v, list):
        return [_plain_value(x, text, call, key) for x in v]
    if isinstance(v, _Pipeline):
        # A bare word where a plain value is expected is read as a string: subsampling=420 or mode=truncate.
        only = v.items[0] if len(v.items) == 1 else None
        if only is not None and not only.has_parens:
            return only.name
        raise _syntax_error(text, v.pos, f"{call.name}: parameter {key!r} expects a value, not a transform")
    return v


# ----- formatting -----------------------------------------------------------------------------------


def format_transform(t: Transform) -> str:
    """The compact string form of a transform (``str(t)``); a top-level chain is written with pipes."""
    return str(t)


def preset_spec(name: str) -> dict[str, Any]:
    """The dict form of a preset's chain (its catalogue entry's chain, parsed)."""
    chain = preset_info(name)["chain"]
    if isinstance(chain, str):
        if chain.strip() == "none":
            return {"name": "chain", "transforms": []}
        return parse_compact(chain)
    if isinstance(chain, list):
        return {"name": "chain", "transforms": chain}
    return dict(chain)


# ----- building transforms from dicts ---------------------------------------------------------------


def build(spec: Any) -> Transform:
    """Build a Transform from the dict form (a list of dicts is a chain)."""
    if isinstance(spec, Transform):
        return spec
    if isinstance(spec, list | tuple):
        return Chain([build(s) for s in spec])
    if not isinstance(spec, dict):
        raise SpecError(f"a transform spec must be a dict with a 'name', got {type(spec).__name__}: {spec!r}")
    if "name" not in spec:
        raise SpecError(f"a transform spec needs a 'name' key, got keys {sorted(spec)}")
    name = spec["name"]
    if not isinstance(name, str):
        raise SpecError(f"a transform's 'name' must be a string, got {name!r}")
    cls = get_transform(name)
    given = {k: v for k, v in spec.items() if k != "name"}
    kwargs = cls.bind(given)
    for p in cls.params:
        if p.name in kwargs and p.kind == "transforms":
            value = kwargs[p.name]
            if not isinstance(value, list | tuple):
                raise SpecError(f"{name}: parameter '{p.name}' must be a list of transforms")
            kwargs[p.name] = [build(s) for s in value]
        elif p.name in kwargs and p.kind == "transform":
            kwargs[p.name] = build(kwargs[p.name])
    old = [k for k in given if k in cls.renamed]
    try:
        return cls(**kwargs)
    except SpecError as exc:
        if not old:
            raise
        spelled = ", ".join(f"'{k}'={given[k]!r}" for k in old)
        raise SpecError(f"{exc} (read from the old spelling {spelled})") from None


def _read_file(path: Path) -> Any:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise SpecError(f"cannot read chain spec file {str(path)!r}: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise SpecError(f"chain spec file {str(path)!r} is not UTF-8 text (YAML or JSON expected)") from None
    if path.suffix.lower() == ".json":
        try:
            return json.loads(text)
        except json.JSONDecodeError as exc:
            raise SpecError(
                f"{path}: invalid JSON at line {exc.lineno}, column {exc.colno}: {exc.msg}"
            ) from None
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise SpecError(f"{path}: invalid YAML: {exc}") from None


def _from_document(doc: Any) -> Any:
    """A spec file may hold the dict form, a list of dicts, a compact string, or a preset-style mapping."""
    if isinstance(doc, dict) and "chain" in doc and "name" not in doc:
        return doc["chain"]
    if isinstance(doc, dict) and "chain" in doc and "transforms" not in doc and doc.get("name") != "chain":
        return doc["chain"]
    return doc


def load_chain(spec: Any) -> Transform:
    """Build a chain from a preset name, a compact string, a dict/list, a YAML/JSON file path or a Transform.

    The result is always a :class:`~fencebox.transforms.chain.Chain`, so ``load_chain(str(c)).to_spec() == c.to_spec()``.
    """
    if isinstance(spec, Transform):
        t = spec
    elif isinstance(spec, Path):
        t = build(_normalise(_from_document(_read_file(spec))))
    elif isinstance(spec, str):
        s = spec.strip()
        if s in list_presets():
            t = build(preset_spec(s))
        elif s.lower().endswith((".yaml", ".yml", ".json")) and "(" not in s:
            t = build(_normalise(_from_document(_read_file(Path(s)))))
        else:
            t = build(parse_compact(s))
    elif isinstance(spec, dict | list | tuple):
        t = build(_normalise(_from_document(spec)))
    else:
        raise SpecError(f"cannot build a chain from {type(spec).__name__}: {spec!r}")
    return t if isinstance(t, Chain) else Chain([t])


def _normalise(doc: Any) -> Any:
    if isinstance(doc, str):
        return preset_spec(doc.strip()) if doc.strip() in list_presets() else parse_compact(doc)
    if doc is None:
        raise SpecError("the chain spec is empty")
    return doc
