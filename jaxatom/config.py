"""One typed configuration mechanism for runs: strict pydantic schemas (unknown keys refused), YAML files, dotted
``section.key=value`` overrides, and pydantic's validation errors turned into one :class:`~jaxatom.errors.ConfigError`
with one line per problem, each naming the dotted key and what would work.

The schemas themselves live beside what they configure: :class:`jaxatom.train.TrainConfig` (optimisation),
:class:`jaxatom.train.run.RunConfig` (``jaxatom train``: data, model, training) and :class:`jaxatom.md.run.MDConfig`
(``jaxatom md``).
"""

from __future__ import annotations

import difflib
import types
import typing
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, TypeAdapter, ValidationError

from jaxatom.errors import ConfigError

__all__ = [
    "StrictModel",
    "STRICT",
    "validate",
    "config_error",
    "apply_overrides",
    "parse_override",
    "read_yaml",
]

#: The pydantic settings every jaxatom schema uses: unknown keys are errors, validated objects are immutable.
STRICT = ConfigDict(extra="forbid", frozen=True)
Schema = TypeVar("Schema")
_MAX_SHOWN = 60  # characters of an offending value shown in a message


class StrictModel(BaseModel):
    """A pydantic model that refuses unknown keys and is immutable. :meth:`load` validates a mapping and raises a
    :class:`ConfigError` (see :func:`config_error`) instead of pydantic's ``ValidationError``.

    (``__init__`` is left as pydantic's: pydantic calls a custom ``__init__`` for every nested section, which would
    turn each section's problems into one opaque error. Direct construction raises pydantic's ``ValidationError``,
    which is a ``ValueError`` too.)
    """

    model_config = STRICT
    #: What the schema is called in error messages ("invalid <title>: ...").
    title: ClassVar[str] = "configuration"

    @classmethod
    def load(
        cls: type[Schema], values: Any, where: str | None = None, error: type[ConfigError] = ConfigError
    ) -> Schema:
        """Validate ``values`` (a mapping, e.g. read from YAML); ``where`` (e.g. the file) is named in errors, which
        are raised as ``error`` (a :class:`ConfigError`)."""
        return validate(cls, values, where=where, error=error)

    def to_dict(self) -> dict[str, Any]:
        """Plain Python values (YAML/JSON ready) that :meth:`load` turns back into an equal object."""
        return self.model_dump(mode="python")


def validate(schema: type[Schema], values: Any, where: str | None = None, error: type[ConfigError] = ConfigError,
             title: str | None = None) -> Schema:  # fmt: skip
    """``values`` validated as ``schema`` (a pydantic model or dataclass); a ``ValidationError`` becomes ``error``
    (a :class:`ConfigError`) listing every problem by dotted key."""
    try:
        if isinstance(schema, type) and issubclass(schema, BaseModel):
            return schema.model_validate(values)
        return TypeAdapter(schema).validate_python(values)
    except ValidationError as err:
        raise config_error(err, schema, where=where, error=error, title=title) from None


def config_error(
    err: ValidationError,
    schema: Any,
    prefix: str = "",
    where: str | None = None,
    error: type[ConfigError] = ConfigError,
    title: str | None = None,
) -> ConfigError:
    """One ``error`` for a pydantic ``ValidationError`` of ``schema``: ``invalid <title>[ in <where>]: <problem>``, or
    a line per problem, each ``<dotted.key>: <what is wrong>; <what would work>`` (unknown keys list the known ones)."""
    lines = []
    for problem in err.errors(include_url=False):
        line = _describe(problem, schema, prefix)
        if line not in lines:
            lines.append(line)
    title = title or getattr(schema, "title", None) or "configuration"
    if not isinstance(title, str):
        title = "configuration"
    head = f"invalid {title}" + (f" in {where}" if where else "")
    if len(lines) == 1:
        return error(f"{head}: {lines[0]}")
    return error(f"{head} ({len(lines)} problems):\n  " + "\n  ".join(lines))


def _dotted(prefix: str, loc: Sequence[str | int]) -> str:
    path = prefix
    for key in loc:
        if isinstance(key, int):
            path += f"[{key}]"
        else:
            path += f".{key}" if path else str(key)
    return path


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= _MAX_SHOWN else text[: _MAX_SHOWN - 3] + "..."


def _describe(problem: Mapping[str, Any], schema: Any, prefix: str) -> str:
    loc, kind, ctx = tuple(problem["loc"]), problem["type"], problem.get("ctx") or {}
    path = _dotted(prefix, loc)
    if kind in ("extra_forbidden", "unexpected_keyword_argument"):
        known = sorted(_fields(_annotation_at(schema, loc[:-1])) or ())
        close = _close_match(str(loc[-1]), known)
        hint = f" (did you mean {close}?)" if close else ""
        return f"{path}: unknown setting{hint}; known: {', '.join(known)}"
    if kind in ("missing", "missing_argument", "missing_keyword_only_argument"):
        field = _field_info(schema, loc)
        fix = f"; {field.description}" if field is not None and field.description else ""
        return f"{path}: required setting is missing{fix}"
    if kind == "literal_error":
        return f"{path}: {_shown(problem['input'])} is not one of {ctx.get('expected', '')}"
    if kind in ("value_error", "assertion_error") and "error" in ctx:
        message = str(ctx["error"])
        return f"{path}: {message}" if path else message
    message = problem["msg"]
    message = message[:1].lower() + message[1:]
    return f"{path}: {message}, got {_shown(problem['input'])}" if path else message


def _close_match(key: str, known: Sequence[str]) -> str | None:
    """The known key ``key`` was probably meant as: a near spelling, or the one it abbreviates (``lr``)."""
    close = difflib.get_close_matches(key, known, n=1)
    if close:
        return close[0]
    initials = [name for name in known if "".join(word[:1] for word in name.split("_")) == key.lower()]
    return initials[0] if len(initials) == 1 else None


def _strip(annotation: Any) -> Any:
    """The annotation without ``Optional``/``Annotated`` wrappers (a union of several types stays)."""
    while True:
        origin = typing.get_origin(annotation)
        if origin is typing.Annotated:
            annotation = typing.get_args(annotation)[0]
        elif origin in (typing.Union, types.UnionType):
            args = [a for a in typing.get_args(annotation) if a is not type(None)]
            if len(args) != 1:
                return annotation
            annotation = args[0]
        else:
            return annotation


def _field_infos(annotation: Any) -> dict[str, Any] | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return dict(annotation.model_fields)
    fields = getattr(annotation, "__pydantic_fields__", None)
    return dict(fields) if fields is not None else None


def _fields(annotation: Any) -> list[str] | None:
    infos = _field_infos(annotation)
    return None if infos is None else list(infos)


def _annotation_at(schema: Any, loc: Sequence[str | int]) -> Any:
    """The type found at ``loc`` inside ``schema`` (fields of models, items of lists and dicts), or None."""
    annotation = schema
    for key in loc:
        annotation = _strip(annotation)
        infos = _field_infos(annotation)
        if infos is not None:
            if key not in infos:
                return None
            annotation = infos[key].annotation
            continue
        origin, args = typing.get_origin(annotation), typing.get_args(annotation)
        if origin in (list, tuple, Sequence) and args:
            annotation = args[0]
        elif origin in (dict, Mapping) and len(args) == 2:
            annotation = args[1]
        else:
            return None
    return _strip(annotation)


def _field_info(schema: Any, loc: Sequence[str | int]) -> Any:
    if not loc:
        return None
    infos = _field_infos(_annotation_at(schema, loc[:-1]))
    return None if infos is None else infos.get(loc[-1])


# -- YAML files and overrides ----------------------------------------------------------------------------------------


def read_yaml(path: str | Path, what: str = "a mapping of settings") -> dict[str, Any]:
    """The mapping in a YAML file (empty file: ``{}``); a :class:`ConfigError` names the file if it is missing, not
    YAML or not a mapping."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"no configuration file at {path}")
    try:
        values = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as err:
        raise ConfigError(f"{path} is not valid YAML: {err}") from None
    if not isinstance(values, Mapping):
        raise ConfigError(f"{path} must hold {what}, got {type(values).__name__}")
    return dict(values)


def parse_override(item: str, example: str = "section.key=value") -> tuple[list[str | int], Any]:
    """``"training.loss={energy: 1.0}"`` -> ``(["training", "loss"], {"energy": 1.0})``: the dotted key (list
    indices as integers, ``model.heads.0.n_out``) and the value parsed as YAML."""
    if "=" not in item or not item.split("=", 1)[0].strip():
        raise ConfigError(f"an override must look like {example}, got {item!r}")
    dotted, raw = item.split("=", 1)
    keys: list[str | int] = [int(key) if key.isdigit() else key for key in dotted.strip().split(".")]
    if any(key == "" for key in keys):
        raise ConfigError(f"an override must look like {example}, got {item!r}")
    try:
        value = yaml.safe_load(raw)
    except yaml.YAMLError as err:
        raise ConfigError(f"the value of override {item!r} is not valid YAML: {err}") from None
    return keys, value


def apply_overrides(values: Mapping[str, Any], overrides: Sequence[str], example: str = "section.key=value") -> dict:
    """A copy of ``values`` with each ``section.key=value`` override set (sections made as needed); whether the keys
    exist is left to the schema, which names a wrong one with the valid choices."""
    result = _copy(values)
    for item in overrides:
        keys, value = parse_override(item, example)
        target: Any = result
        for depth, key in enumerate(keys[:-1]):
            here = _dotted("", keys[: depth + 1])
            if isinstance(target, list):
                if not isinstance(key, int) or not -len(target) <= key < len(target):
                    raise ConfigError(f"override {item!r}: {here} is not an item of a list of {len(target)}")
                target = target[key]
            elif isinstance(target, dict):
                if target.get(key) is None:
                    if isinstance(keys[depth + 1], int):
                        raise ConfigError(
                            f"override {item!r}: {here} is not set, so it has no item {keys[depth + 1]}; give the "
                            f"whole list, e.g. {here}=[...]"
                        )
                    target[key] = {}
                target = target[key]
            else:
                raise ConfigError(f"override {item!r}: {_dotted('', keys[:depth])} is a value, not a section")
            if not isinstance(target, dict | list):
                raise ConfigError(f"override {item!r}: {here} is a value ({_shown(target)}), not a section")
        last = keys[-1]
        if isinstance(target, list):
            if not isinstance(last, int) or not -len(target) <= last < len(target):
                raise ConfigError(f"override {item!r}: {_dotted('', keys)} is not an item of a list of {len(target)}")
        target[last] = value
    return result


def _copy(value: Any) -> Any:
    """A deep copy of plain YAML data (mappings and lists; other values are shared)."""
    if isinstance(value, Mapping):
        return {key: _copy(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_copy(item) for item in value]
    return value
