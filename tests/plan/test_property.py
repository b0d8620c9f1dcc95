"""Generated and mutated site files give a plan or clean YAML-path errors, never a traceback.

10,000 mutated site models plus 1,000 mutated YAML texts (hypothesis).
"""

from __future__ import annotations

import copy
import re
from pathlib import Path
from typing import Any

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gpudc.catalog import load_catalog
from gpudc.errors import InputError
from gpudc.model import site_from_config
from gpudc.model.loader import read_config
from gpudc.plan import expand

SRC = "stacks/Pulumi.fuzz.yaml"
PROBLEM = re.compile(r"^stacks/Pulumi\.fuzz\.yaml: \S.*?: .+", re.S)
CATALOG = load_catalog()
BASE: dict[str, Any] = yaml.safe_load((Path(__file__).parent / "base_site.yaml").read_text())


def _paths(node: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [prefix] if prefix else []
    if isinstance(node, dict):
        for key, value in node.items():
            out += _paths(value, (*prefix, key))
    elif isinstance(node, list):
        for i, value in enumerate(node):
            out += _paths(value, (*prefix, i))
    return out


PATHS = _paths(BASE)
WEIRD = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-10, max_value=10**6),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from(["", "a;b", "{{x}}", "$(id)", "h1", "h2", "hgx", "dgx_h200", "dgx_b200", "dgx_gb200_nvl72",
                     "r570-cuda12.8", "r535-cuda12.2", "liquid", "air", "10.0.0.0/8", "10.0.1.0/25", "qm9700",
                     "sn2201", "q3400", "roce", "ethernet", "{pool}-{index}", "{rack}", "1.2.3.4/33", "x" * 80]),
    st.lists(st.integers(min_value=0, max_value=5), max_size=3),
    st.dictionaries(st.sampled_from(["name", "racks", "bogus", "power_kw"]), st.integers(0, 200), max_size=2),
)


@st.composite
def mutated_sites(draw: st.DrawFn) -> dict[str, Any]:
    data = copy.deepcopy(BASE)
    for _ in range(draw(st.integers(min_value=1, max_value=3))):
        path = draw(st.sampled_from(PATHS))
        parent: Any = data
        try:
            for key in path[:-1]:
                parent = parent[key]
            op = draw(st.sampled_from(["set", "set", "set", "delete", "extra", "scale"]))
            last = path[-1]
            if op == "set":
                parent[last] = draw(WEIRD)
            elif op == "delete":
                del parent[last]
            elif op == "extra" and isinstance(parent, dict):
                parent[draw(st.sampled_from(["zzz", "Power", "count"]))] = draw(WEIRD)
            elif op == "scale" and isinstance(parent[last], int | float) and not isinstance(parent[last], bool):
                parent[last] = parent[last] * draw(st.sampled_from([0, 2, 10, 100, -1]))
        except (KeyError, IndexError, TypeError):
            continue
    return data


def _plan_or_clean_errors(data: Any) -> None:
    try:
        site = site_from_config(data, SRC)
        plan = expand(site, CATALOG, source=SRC)
    except InputError as exc:
        assert exc.problems
        for problem in exc.problems:
            assert PROBLEM.match(problem), problem
        return
    assert len(plan.nodes) > 0


@settings(max_examples=10_000, deadline=None, suppress_health_check=[HealthCheck.too_slow], database=None)
@given(mutated_sites())
def test_mutated_sites_plan_or_fail_cleanly(data: dict[str, Any]) -> None:
    _plan_or_clean_errors(data)


@settings(max_examples=300, deadline=None, database=None)
@given(
    st.integers(min_value=1, max_value=60),
    st.integers(min_value=1, max_value=4),
    st.floats(min_value=5, max_value=200),
    st.integers(min_value=1, max_value=64),
    st.sampled_from(["r580-cuda13.0", "r570-cuda12.8", "r535-cuda12.2"]),
    st.sampled_from(["dgx_h200", "dgx_b200"]),
)
def test_generated_sites(count: int, racks: int, rack_kw: float, su: int, profile: str, sku: str) -> None:
    data = copy.deepcopy(BASE)
    data["pools"][0].update(count=count, profile=profile, sku=sku)
    data["pools"][1]["racks"] = racks
    data["halls"][0]["rack_power_kw"] = rack_kw
    data["fabrics"]["compute"]["su_size"] = su
    _plan_or_clean_errors(data)


@settings(max_examples=1_000, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture],
          database=None)
@given(st.data())
def test_mutated_yaml_text_fails_cleanly(tmp_path: Path, data: st.DataObject) -> None:
    text = yaml.safe_dump({"config": {f"gpudc:{k}": v for k, v in BASE.items()}}, sort_keys=False)
    pos = data.draw(st.integers(min_value=0, max_value=len(text) - 1))
    junk = data.draw(st.sampled_from(["", ":", "- ", "{", "]", "\t", "'", "&a", "*a", "!!python/object:os.system", "\n  x: 1"]))
    cut = data.draw(st.integers(min_value=0, max_value=5))
    path = tmp_path / "Pulumi.fuzz.yaml"
    path.write_text(text[:pos] + junk + text[pos + cut :])
    try:
        config = read_config(path)
    except InputError as exc:
        assert all(p.startswith(str(path)) or "Pulumi.fuzz.yaml" in p for p in exc.problems)
        return
    _plan_or_clean_errors(config)
