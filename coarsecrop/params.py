"""Typed parameters: a notebook's ``parameters`` cell mirrors a dataclass, and this module turns a mapping
(a preset file, papermill's injected cell, the cell's own assignments) into that dataclass.

Why: papermill only *warns* about a parameter the notebook does not have, so a typo in a preset would
silently run the defaults. ``load_params`` fails at once instead, naming the bad key, the file it came
from and every valid key; a value of the wrong type fails the same way.

    params = load_params(CropStudyParams, {"num_images": 8}, source="params/smoke/01_crops.yaml")
    run = run_id_of(params)                        # short hash of the effective parameters
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import types
import typing
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")

# Types a parameter value may have. Anything else (a figure, a model, a module) is not a parameter.
PLAIN_TYPES = (bool, int, float, str, list, tuple, dict, type(None))


class ParameterError(ValueError):
    """A parameter that the dataclass does not have, or a value of the wrong type."""


def load_params(cls: type[T], mapping: Mapping[str, Any], source: str) -> T:
    """Build dataclass ``cls`` from ``mapping``; missing keys take the dataclass defaults.

    Raises ParameterError naming ``source`` and listing the valid keys when a key is unknown or a
    value does not match the field's type (int, float, str, bool, list[...], tuple[...], dict, X | None).
    An int is accepted for a float field; a list for a tuple field (YAML has no tuples). A class attribute
    ``MINIMUM`` ({field: smallest value}) adds ranges, checked here too."""
    fields = {f.name: f for f in dataclasses.fields(cls)}
    valid = ", ".join(sorted(fields))
    unknown = sorted(set(mapping) - set(fields))
    if unknown:
        raise ParameterError(
            f"{source}: unknown parameter(s) {', '.join(map(repr, unknown))} for {cls.__name__}; "
            f"valid keys: {valid}"
        )
    hints = typing.get_type_hints(cls)
    values = {}
    for key, value in mapping.items():
        try:
            values[key] = check_value(value, hints[key])
        except TypeError as err:
            raise ParameterError(f"{source}: parameter {key!r} = {value!r}: {err}; valid keys: {valid}") from None
    for key, low in getattr(cls, "MINIMUM", {}).items():  # a class's own ranges: {field: smallest value}
        if values.get(key) is not None and values[key] < low:
            raise ParameterError(f"{source}: parameter {key!r} = {values[key]!r}: must be at least {low}")
    return cls(**values)


def load_notebook_params(cls: type[T], namespace: Mapping[str, Any], before: set[str], source: str) -> T:
    """Validate a notebook's parameters from its global namespace.

    ``before`` is ``set(globals())`` taken in the cell just above the ``parameters`` cell. Every plain-data
    global defined since (by the parameters cell or by papermill's injected cell) must be a field of ``cls``:
    a name papermill injected that the dataclass lacks is a typo and fails here. Names starting with ``_``
    and non-data objects (modules, functions, figures) are ignored, so cells below may define those."""
    fields = {f.name for f in dataclasses.fields(cls)}
    new = {
        name: value for name, value in namespace.items()
        if name not in before and not name.startswith("_") and isinstance(value, PLAIN_TYPES)
    }
    mapping = {name: namespace[name] for name in fields if name in namespace}
    mapping.update({name: value for name, value in new.items() if name not in fields})
    return load_params(cls, mapping, source)


# Parameters that say where a run goes, not what it computes: not part of the run id. Set by whoever
# executes the notebook (coarsecrop.runs), never by a preset or a sweep.
NOT_HASHED = ("out", "preset")
# Parameters added after runs were committed: left out of the run id while they hold the value every earlier
# run had, so those runs keep their ids (scene_version 1: the v1 generator of coarsecrop.data.synthetic;
# pretrain_split None: 02_pretrain's split chosen from the source, as before the parameter existed).
HASHED_UNLESS = {"scene_version": 1, "pretrain_split": None}


def run_id_of(params: Any) -> str:
    """The id of a run: ``run_id`` of its effective parameters (a mapping, or a parameters dataclass) without
    those in NOT_HASHED, and without those of HASHED_UNLESS at their legacy value. The only code that knows
    which keys a run id covers."""
    mapping = dataclasses.asdict(params) if dataclasses.is_dataclass(params) else dict(params)
    return run_id({k: v for k, v in mapping.items()
                   if k not in NOT_HASHED and not (k in HASHED_UNLESS and v == HASHED_UNLESS[k])})


def run_id(params: Mapping[str, Any], length: int = 10) -> str:
    """Short, stable hash of a mapping (JSON with sorted keys; tuples hash like lists; numbers by value, so
    ``1.0`` hashes as ``1``). A run's id is ``run_id_of(params)``."""
    text = json.dumps(_by_value(params), sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:length]


def _by_value(value: Any) -> Any:
    """``value`` with every float that is a whole number made an int, at any depth: a float field spelt ``1``
    in a preset (kept as written by the runners) and ``1.0`` by the notebook's dataclass (which makes ints of
    float fields floats) is one run, not two. Every committed run's parameters hold no whole-number float,
    so their ids are the same under this rule (tests/test_reference_results.py recomputes them)."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, Mapping):
        return {k: _by_value(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_by_value(v) for v in value]
    return value


def project_root(start: Path | None = None) -> Path:
    """The nearest folder at or above ``start`` (default: cwd) holding pyproject.toml, else ``start``."""
    start = (start or Path.cwd()).resolve()
    for folder in (start, *start.parents):
        if (folder / "pyproject.toml").is_file():
            return folder
    return start


def default_run_dir(notebook: str, params: Any) -> Path:
    """runs/<notebook>/<run id> under the project root (``run_id_of(params)``)."""
    return project_root() / "runs" / notebook / run_id_of(params)


def check_value(value: Any, tp: Any) -> Any:
    """``value`` when it matches type hint ``tp`` (an int for a float, a list for a tuple, converted), else
    TypeError saying what it got and what was expected."""
    try:
        return _check(value, tp)
    except TypeError as err:
        raise TypeError(f"{err} (expected {_type_name(tp)})") from None


def _check(value: Any, tp: Any) -> Any:
    """Return ``value`` (lists converted for tuple fields) when it matches type hint ``tp``, else TypeError."""
    if tp is Any:
        return value
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        for option in args:
            try:
                return _check(value, option)
            except TypeError:
                continue
        raise TypeError(f"got {type(value).__name__}")
    if tp is type(None):
        if value is None:
            return None
        raise TypeError(f"got {type(value).__name__}")
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise TypeError(f"got {type(value).__name__}")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise TypeError(f"got {type(value).__name__}")
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        raise TypeError(f"got {type(value).__name__}")
    if tp is str:
        if isinstance(value, str):
            return value
        raise TypeError(f"got {type(value).__name__}")
    container = origin or tp
    if container in (list, tuple, Sequence):
        if not isinstance(value, (list, tuple)):
            raise TypeError(f"got {type(value).__name__}")
        if container is tuple and args and args[-1] is not Ellipsis:
            if len(value) != len(args):
                raise TypeError(f"needs {len(args)} items, got {len(value)}")
            items = [_check(v, a) for v, a in zip(value, args)]
        else:
            item_type = args[0] if args else Any
            items = [_check(v, item_type) for v in value]
        return tuple(items) if container is tuple else items
    if container is dict:
        if not isinstance(value, dict):
            raise TypeError(f"got {type(value).__name__}")
        if args:
            return {_check(k, args[0]): _check(v, args[1]) for k, v in value.items()}
        return dict(value)
    raise TypeError(f"unsupported field type {tp!r}")


def _type_name(tp: Any) -> str:
    if isinstance(tp, type):
        return tp.__name__
    return str(tp).replace("typing.", "")
