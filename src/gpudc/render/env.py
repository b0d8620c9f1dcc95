"""The Jinja2 environment every renderer uses.

StrictUndefined (a missing value is an error, never an empty string), autoescape for the
markup formats (SVG/XML/HTML), and format-aware filters so no template escapes by hand:
`json` (JSON and YAML scalars: JSON is YAML), `csvrow` (one CSV row through the csv module),
`zone_txt` is not needed because names are RFC 1123 labels by the model's rule.
"""

from __future__ import annotations

import csv
import io
import ipaddress
import json
from functools import cache
from pathlib import Path
from typing import Any

from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape
from markupsafe import Markup

from gpudc.resources import shipped


def templates_dir() -> Path:
    return shipped("templates")


def _json(value: Any, indent: int | None = None) -> Markup:
    return Markup(json.dumps(value, sort_keys=True, indent=indent, ensure_ascii=True))


def _csvrow(values: list[Any]) -> Markup:
    buf = io.StringIO()
    csv.writer(buf, lineterminator="\n").writerow(["" if v is None else v for v in values])
    return Markup(buf.getvalue().rstrip("\n"))


def _reverse_name(address: str) -> str:
    """The PTR owner label of an address relative to its /24 reverse zone (the last octet)."""
    return address.rsplit(".", 1)[1]


def _netmask(prefix: str) -> str:
    return str(ipaddress.IPv4Network(prefix).netmask)


@cache
def environment() -> Environment:
    env = Environment(
        loader=FileSystemLoader(str(templates_dir())),
        undefined=StrictUndefined,
        autoescape=select_autoescape(enabled_extensions=("svg", "xml", "html", "svg.j2", "html.j2"),
                                     default_for_string=False, default=False),
        keep_trailing_newline=True,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["json"] = _json
    env.filters["csvrow"] = _csvrow
    env.filters["ptr"] = _reverse_name
    env.filters["netmask"] = _netmask
    return env
