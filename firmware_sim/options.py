"""The simulator's options, declared on its config dataclasses and nowhere else.

A config field becomes an option by its metadata (`option(...)`): a help text, the unit the
option is written in, and, where the option's name or unit differ from the field's, the name and
the factor that turns the written value into the field's. `python -m firmware_sim` derives its
flags from these declarations, and a `--options 'seed=3&noise=0'` query (what the host's sim://
URL carries) is parsed against the same declarations, so a URL and a command line mean the
same thing and an unknown option is refused with the list of known ones.
"""
from __future__ import annotations

import argparse
import dataclasses
from dataclasses import dataclass
from typing import Any, Callable, Iterable
from urllib.parse import parse_qsl

_SWITCH_TRUE = ("", "1", "true", "yes", "on")
_SWITCH_FALSE = ("0", "false", "no", "off")


def option(default: Any, help: str, *, parse: Callable[[str], Any] | None = None, unit: str = "",
           name: str | None = None, scale: float | None = None,
           choices: tuple[str, ...] | None = None, default_text: str | None = None) -> Any:
    """A dataclass field that is also a simulator option.

    parse: str -> value as written (default: the type of `default`; a bool default is a switch);
    unit: the unit the option is written in; name: the option's name if not the field's;
    scale: written value x scale = field value (e.g. 1e-3 for an option in ms, field in s);
    default_text: the default as shown by --help, if repr() of it would not do."""
    if parse is None:
        parse = type(default)
    meta = {"help": help, "parse": parse, "unit": unit, "name": name, "scale": scale, "choices": choices,
            "default_text": default_text}
    return dataclasses.field(default=default, metadata={"option": meta})


@dataclass(frozen=True)
class OptionSpec:
    """One option as declared on a config class."""

    name: str
    cls: type
    field: str
    default: Any
    help: str
    parse: Callable[[str], Any]
    unit: str
    scale: float | None
    choices: tuple[str, ...] | None
    default_text: str | None = None

    @property
    def switch(self) -> bool:
        return self.parse is bool

    @property
    def default_written(self) -> str:
        """The default as one would write the option."""
        if self.default_text is not None:
            return self.default_text
        if isinstance(self.default, float):
            return f"{self.default / (self.scale or 1.0):g}"
        return "unset" if self.default is None else str(self.default)

    def parse_text(self, text: str) -> Any:
        """The field value for the option written as `text` (ValueError saying what is wrong)."""
        if self.switch:
            t = text.strip().lower()
            if t in _SWITCH_TRUE:
                return True
            if t in _SWITCH_FALSE:
                return False
            raise ValueError(f"option {self.name} is a switch (1/0, true/false), got {text!r}")
        if self.choices is not None and text not in self.choices:
            raise ValueError(f"option {self.name}={text!r} is not one of {', '.join(self.choices)}")
        try:
            value = self.parse(text)
        except (TypeError, ValueError) as e:
            kind = getattr(self.parse, "__name__", "value")
            why = f": {e}" if kind not in ("int", "float", "str") else ""
            raise ValueError(f"option {self.name}={text!r} is not a valid {kind}{why}") from None
        return value if self.scale is None else value * self.scale


def option_specs(classes: Iterable[type]) -> dict[str, OptionSpec]:
    """Every option declared on `classes`, by option name (names must not repeat)."""
    out: dict[str, OptionSpec] = {}
    for cls in classes:
        for f in dataclasses.fields(cls):
            meta = f.metadata.get("option")
            if meta is None:
                continue
            name = meta["name"] or f.name
            if name in out:
                raise TypeError(f"option {name!r} declared twice ({out[name].cls.__name__}, {cls.__name__})")
            out[name] = OptionSpec(name, cls, f.name, f.default, meta["help"], meta["parse"], meta["unit"],
                                   meta["scale"], meta["choices"], meta["default_text"])
    return out


def parse_query(query: str, specs: dict[str, OptionSpec]) -> dict[str, Any]:
    """'seed=3&noise=0' -> {option name: field value}; unknown names and bad values raise
    ValueError (the last of repeated names wins)."""
    out: dict[str, Any] = {}
    for key, text in parse_qsl(query, keep_blank_values=True, strict_parsing=False):
        spec = specs.get(key)
        if spec is None:
            raise ValueError(f"unknown option {key!r}; known options: {', '.join(sorted(specs))}")
        out[key] = spec.parse_text(text)
    return out


def add_arguments(parser: argparse.ArgumentParser, specs: dict[str, OptionSpec]) -> None:
    """A --flag per option; only flags given on the command line end up in the namespace."""
    for spec in specs.values():
        flag = "--" + spec.name.replace("_", "-")
        unit = f" ({spec.unit})" if spec.unit else ""
        if spec.switch:
            parser.add_argument(flag, dest=spec.name, action="store_const", const="1",
                                default=argparse.SUPPRESS, help=f"{spec.help}{unit}".replace("%", "%%"))
            continue
        choices = f" [{'|'.join(spec.choices)}]" if spec.choices else ""
        help_text = f"{spec.help}{unit}{choices}; default {spec.default_written}"
        metavar = "N" if spec.parse is int else "VALUE"
        parser.add_argument(flag, dest=spec.name, metavar=metavar, default=argparse.SUPPRESS,
                            help=help_text.replace("%", "%%"))


def from_arguments(ns: argparse.Namespace, specs: dict[str, OptionSpec]) -> dict[str, Any]:
    """{option name: field value} for the flags present in `ns` (ValueError on a bad value)."""
    return {name: spec.parse_text(getattr(ns, name)) for name, spec in specs.items() if hasattr(ns, name)}


def build(cls: type, specs: dict[str, OptionSpec], values: dict[str, Any], **fixed: Any) -> Any:
    """An instance of config class `cls` from option values (and `fixed` fields)."""
    kw = {specs[n].field: v for n, v in values.items() if specs[n].cls is cls}
    return cls(**kw, **fixed)
