"""Property: whatever cables are swapped, pulled or added, `compare` reports exactly those."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from gpudc.plan.types import Switch
from gpudc.render.artifacts import breakout_factor, cumulus_port
from gpudc.render.cabling import End, Link, compare


@st.composite
def perturbed(draw: st.DrawFn) -> tuple[set[Link], set[Link], int, int, int]:
    n = draw(st.integers(min_value=4, max_value=40))
    planned = [(("leaf", str(i + 1)), (f"host{i} mlx5_0", "1")) for i in range(n)]
    order = draw(st.permutations(range(n)))
    swaps = draw(st.integers(min_value=0, max_value=n // 4))
    pulled = draw(st.integers(min_value=0, max_value=(n - 2 * swaps) // 2))
    added = draw(st.integers(min_value=0, max_value=5))
    observed: list[tuple[End, End]] = list(planned)
    for k in range(swaps):
        i, j = order[2 * k], order[2 * k + 1]
        (a_i, b_i), (a_j, b_j) = planned[i], planned[j]
        observed[i], observed[j] = (a_i, b_j), (a_j, b_i)
    gone = {order[2 * swaps + k] for k in range(pulled)}
    kept = [link for idx, link in enumerate(observed) if idx not in gone]
    kept += [(("spare", str(k)), (f"stray{k} mlx5_0", "1")) for k in range(added)]
    return ({frozenset(p) for p in planned}, {frozenset(o) for o in kept}, swaps, pulled, added)


@settings(max_examples=150, deadline=None)
@given(perturbed())
def test_compare_reports_exactly_the_changes(case: tuple[set[Link], set[Link], int, int, int]) -> None:
    planned, observed, swaps, pulled, added = case
    report = compare(planned, observed, "sample")
    assert len(report.swapped) == swaps
    assert len(report.missing) == pulled
    assert len(report.extra) == added
    assert report.problems == swaps + pulled + added
    for a, b in report.swapped:  # a swapped pair names two planned cables
        assert a in planned and b in planned


@given(st.sampled_from([100, 200, 400, 800]), st.sampled_from([100, 200, 400, 800]), st.integers(1, 64))
def test_breakout_ports_are_unique_and_in_their_cage(switch_rate: int, fabric_rate: int, port: int) -> None:
    sw = Switch("s", "frontend", "leaf", "m", 64, switch_rate, None, None, "h", None, "")
    k = breakout_factor(sw, fabric_rate)
    assert k == (switch_rate // fabric_rate if switch_rate > fabric_rate else 1)
    names = {cumulus_port(str(p), k) for p in range(1, 65)}
    assert len(names) == 64
    name = cumulus_port(str(port), k)
    cage = (port - 1) // k + 1
    assert name == f"swp{cage}" if k == 1 else name.startswith(f"swp{cage}s")
