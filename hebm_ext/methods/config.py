"""Config validation for every method, derived from the config dataclasses: each field's kind comes from its type
annotation (or its default, for ``object``), its range from one table below, so that ``methods.create`` (through
``base.make_config``) checks every value, with the field named, before anything is built or written.

Kinds: bool, int, float, str, tuple (of ints or floats, as the default's items), an optional ``X | None``, and
int-or-tuple (a value per stage or one for all). Values are normalised: a list becomes a tuple (JSON has no tuples),
an integral float an int (``1e3``), an int a float where the field is a float; anything else of the wrong kind is
an error (``'abc'`` is not three latent layers, ``0.5`` is not a pair of betas).

Ranges: ``RULES`` matches fields by name across all configs (the papers' vocabulary: ``*_steps``, ``*_lr``,
``*betas``, ``*_backend`` ...); ``CLASS_RULES`` refines single fields of one config. A str field ``x`` takes its
choices from a constant of its config's module named ``X`` + "S" or ``X`` (``scheme`` -> ``SCHEMES``, ``bn_mode`` ->
``BN_MODES``, ``prior_sampling`` -> ``PRIOR_SAMPLING``), so a method's own tuple of choices is the only list.
A new numeric field needs a rule here (python_tests/test_config_errors.py checks that every field has one).
"""
from __future__ import annotations

import dataclasses
import math
import re
import sys
import types
import typing
from dataclasses import dataclass


class ConfigError(ValueError):
    """A config value of the wrong kind or out of range; the message names the field, the expectation, the value."""


@dataclass(frozen=True)
class Rule:
    ge: float | None = None         # value >= ge (tuples: every item)
    gt: float | None = None
    le: float | None = None
    lt: float | None = None
    choices: object = None          # a tuple, or a callable returning one (resolved when checked)
    length: int | None = None       # tuples: exactly this many items
    min_len: int = 1                # tuples: at least this many
    same_len: str | None = None     # tuples: as many items as this tuple field
    kind: str | None = None         # override the annotation: "int_or_tuple"
    example: str | None = None      # shown in the message of a tuple field


def _fused_backends():
    from ..sampling.fused import BACKENDS
    return BACKENDS


def _generic_backends():
    from ..sampling.generic import BACKENDS
    return BACKENDS


def _activations():
    from ..nn.energy import ACTIVATIONS
    return ACTIVATIONS


def _datasets():
    from ..data import READERS
    return tuple(sorted(READERS))


def _crops():
    from ..data.celeba import CROPS
    return CROPS


def _backbones():
    from .backbone_stage import BACKBONES
    return BACKBONES


def _ld_bases():
    from .two_stage import LD_BASES
    return LD_BASES


def _group_ebms():
    from ..nn.group_ebm import GROUP_EBMS
    return tuple(GROUP_EBMS)


def _inits():
    from ..nn.conv import INITS
    return INITS


POS_INT = Rule(ge=1)
POS = Rule(gt=0)
NONNEG = Rule(ge=0)
# (pattern matched against the whole field name, rule); the first match wins
RULES = [
    (r"preset", Rule()),
    (r"dataset", Rule(choices=_datasets)),
    (r"crop", Rule(choices=_crops)),
    (r"backbone", Rule(choices=_backbones)),
    (r"ld_base", Rule(choices=_ld_bases)),
    (r"ebm", Rule(choices=_group_ebms)),
    (r"group_shapes", Rule(ge=1, kind="shapes", example="((20, 16, 16),) * 30")),
    (r"vae_ch|ebm_ch|nef", POS_INT),
    (r"vae_cells", NONNEG),
    (r"ld_size", POS),
    (r".*_init", Rule(choices=_inits)),
    (r"prior_backend", Rule(choices=_fused_backends)),
    (r".*_backend", Rule(choices=_generic_backends)),
    (r".*activation", Rule(choices=_activations)),
    (r"(.*_)?betas", Rule(ge=0, lt=1, length=2, example="(0.5, 0.999)")),
    (r"(.*_)?lr|lr[A-Z]", POS),
    (r"(.*_)?gamma", Rule(gt=0, le=1)),
    (r"(.*_)?(weight_)?decay", NONNEG),
    (r"refine_steps|vae_steps", NONNEG),
    (r".*_steps", POS_INT),
    (r".*_step_size|b_square", POS),
    (r"sigma_min", NONNEG),
    (r".*sig|.*sigma|sigma_.*", POS),
    (r"batch_size|epochs|n_stages|buffer_size|plateau_patience|T", POS_INT),
    (r"min_iters_per_stage", NONNEG),
    (r"iters_per_stage", Rule(ge=1, kind="int_or_tuple")),
    (r"n[zgdi]f?", POS_INT),
    (r"z_dims", Rule(ge=1, example="(8, 16)")),
    (r".*_hidden|.*_depth", POS_INT),
    (r"[GSI]factor|plateau_tol", NONNEG),
    (r"stop_threshold", POS),
    (r"reinit_prob", Rule(ge=0, le=1)),
    (r"plateau_decay", Rule(ge=0, lt=1)),
]
CLASS_RULES = {
    "JointEBMConfig": {"z_dims": Rule(ge=1, min_len=2, example="(8, 16)"),  # the ladder needs a layer below the top
                       "head_hidden": Rule(ge=1, same_len="z_dims"), "head_depth": Rule(ge=1, same_len="z_dims")},
    "DiffusionEBMConfig": {"T": Rule(ge=2)},
}


def rule_for(cls, name: str) -> Rule | None:
    r = CLASS_RULES.get(cls.__name__, {}).get(name)
    if r is not None:
        return r
    for pattern, rule in RULES:
        if re.fullmatch(pattern, name):
            return rule
    return None


def _kind(cls, f: dataclasses.Field, hints: dict) -> tuple[str, bool]:
    """(kind, None allowed) of a field from its annotation, or its default's type for object / Any."""
    t = hints.get(f.name, object)
    optional = False
    if isinstance(t, types.UnionType) or typing.get_origin(t) is typing.Union:
        args = [a for a in typing.get_args(t) if a is not type(None)]
        optional = len(args) < len(typing.get_args(t))
        t = args[0] if len(args) == 1 else object
    if typing.get_origin(t) is tuple:
        t = tuple
    for k in (bool, int, float, str, tuple):
        if t is k:
            return k.__name__, optional
    d = f.default if f.default is not dataclasses.MISSING else None
    for k in (bool, int, float, str, tuple):
        if isinstance(d, k):
            return k.__name__, optional
    return "any", optional


def _fmt_range(r: Rule) -> str:
    parts = []
    for op, v in ((">=", r.ge), (">", r.gt), ("<=", r.le), ("<", r.lt)):
        if v is not None:
            parts.append(f"{op} {v:g}")
    return " and ".join(parts)


def _check_number(x, kind: str, r: Rule | None):
    """x as an int / float, or an error string."""
    if isinstance(x, bool) or not isinstance(x, (int, float)):
        return None, f"must be {'an integer' if kind == 'int' else 'a number'}"
    if kind == "int":
        if isinstance(x, float):
            if not (math.isfinite(x) and x.is_integer()):
                return None, "must be an integer"
            x = int(x)
    else:
        x = float(x)
        if not math.isfinite(x):
            return None, "must be a finite number"
    if r is not None:
        if (r.ge is not None and not x >= r.ge) or (r.gt is not None and not x > r.gt) or \
                (r.le is not None and not x <= r.le) or (r.lt is not None and not x < r.lt):
            return None, f"must be {'an integer' if kind == 'int' else 'a number'} {_fmt_range(r)}"
    return x, None


def _describe(kind: str, r: Rule | None, item: str) -> str:
    rng = f" {_fmt_range(r)}" if r is not None and _fmt_range(r) else ""
    n = f"{r.length} " if r is not None and r.length else ""
    return f"a tuple of {n}{item}s{rng}"


def _check_value(cls, f, kind: str, optional: bool, r: Rule | None, v, values: dict):
    """(normalised value, None) or (None, error text without the field name)."""
    if v is None:
        return (None, None) if optional else (None, "must not be None")
    if kind == "bool":
        if isinstance(v, str) and v.lower() in ("true", "false"):
            return v.lower() == "true", None
        return (v, None) if isinstance(v, bool) else (None, "must be True or False")
    if kind in ("int", "float"):
        return _check_number(v, kind, r)
    if kind == "str":
        if not isinstance(v, str):
            return None, "must be a string"
        choices = r.choices() if r is not None and callable(r.choices) else r.choices if r is not None else None
        if choices is None:
            choices = _module_choices(cls, f.name)
        if choices is not None and v not in choices:
            return None, f"must be one of {tuple(choices)}"
        return v, None
    if kind == "shapes":  # latent group shapes, top first: a tuple of (d,) or (c, h, w) tuples of positive ints
        want = f"a tuple of group shapes, each (d,) or (c, h, w) of positive integers, e.g. {r.example}"
        if not isinstance(v, (list, tuple)):
            return None, f"must be {want}"
        out = []
        for g in v:
            if not isinstance(g, (list, tuple)) or len(g) not in (1, 3):
                return None, f"must be {want}"
            shape = []
            for e in g:
                x, err = _check_number(e, "int", r)
                if err is not None:
                    return None, f"must be {want}"
                shape.append(x)
            out.append(tuple(shape))
        return tuple(out), None
    if kind == "int_or_tuple":
        if not isinstance(v, (list, tuple)):
            x, err = _check_number(v, "int", r)
            return (x, None) if err is None else (None, f"{err}, or a tuple of them (one per stage)")
        kind = "tuple"
    if kind == "tuple":
        d = f.default if f.default is not dataclasses.MISSING else ()
        item = "float" if any(isinstance(e, float) for e in (d if isinstance(d, tuple) else ())) else "int"
        want = _describe(kind, r, "integer" if item == "int" else "number")
        ex = f", e.g. {r.example}" if r is not None and r.example else ""
        if r is not None and r.kind == "int_or_tuple":
            want = f"an integer {_fmt_range(r)} or {want} (one per stage)"
        if not isinstance(v, (list, tuple)):
            return None, f"must be {want}{ex}"
        out = []
        for e in v:
            x, err = _check_number(e, item, r)
            if err is not None:
                return None, f"must be {want}{ex}"
            out.append(x)
        if r is not None and r.length is not None and len(out) != r.length:
            return None, f"must be {want}{ex}"
        min_len = r.min_len if r is not None else 1
        if len(out) < min_len:
            return None, f"must be {want} with at least {min_len} item{'s' if min_len > 1 else ''}{ex}"
        if r is not None and r.same_len is not None:
            other = values.get(r.same_len)
            if isinstance(other, tuple) and len(other) != len(out):  # (a list: that field failed its own check)
                return None, (f"needs one entry per item of {r.same_len} ({len(other)}: {tuple(other)}); set both "
                              f"(e.g. {f.name}={tuple(out[:1] * len(other)) if out else ''})")
        return tuple(out), None
    return v, None


def _module_choices(cls, name: str):
    mod = sys.modules.get(cls.__module__)
    for const in (name.upper() + "S", name.upper()):
        c = getattr(mod, const, None)
        if isinstance(c, tuple) and all(isinstance(e, str) for e in c):
            return c
    return None


def validate(cls, values: dict, overrides=(), method: str | None = None) -> dict:
    """values (a preset merged with overrides) checked and normalised field by field; ConfigError listing every
    bad field (one line) otherwise. ``overrides`` names the fields that came from the user (said in the message)."""
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    defaults = {n: f.default for n, f in fields.items() if f.default is not dataclasses.MISSING}
    values = {**defaults, **values}
    out, errors = dict(values), []
    # fields compared with another one (same_len) last, so that they see its normalised value
    order = sorted(values, key=lambda n: getattr(rule_for(cls, n), "same_len", None) is not None)
    for name in order:
        f = fields.get(name)
        if f is None:
            continue
        kind, optional = _kind(cls, f, hints)
        r = rule_for(cls, name)
        if r is not None and r.kind is not None:
            kind = r.kind
        v, err = _check_value(cls, f, kind, optional, r, values[name], out)
        if err is not None:
            if isinstance(out[name], tuple):
                out[name] = list(out[name])  # marks it failed for same_len checks of later fields
            src = "" if name in overrides else " (from the preset)" if name not in defaults or \
                values[name] is not defaults[name] else " (the default)"
            errors.append(f"{name} {err}, got {values[name]!r}{src}")
        else:
            out[name] = v
    if errors:
        who = f"{method} config" if method else cls.__name__
        raise ConfigError(f"invalid {who}: " + "; ".join(errors))
    return out


def unranged_fields(cls) -> list:
    """Numeric / tuple fields of cls without a rule (what a test lists; a new field needs a rule above)."""
    hints = typing.get_type_hints(cls)
    return [f.name for f in dataclasses.fields(cls)
            if _kind(cls, f, hints)[0] in ("int", "float", "tuple", "any") and rule_for(cls, f.name) is None]
