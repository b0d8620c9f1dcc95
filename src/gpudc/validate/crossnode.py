"""Measurements across nodes, orchestrated over SSH (`--level full`, `gpudc burnin`).

- GPUDirect `ib_write_bw` between node pairs, every rail at once (rail r: NIC r, GPU r, TCP
  port base + r for perftest's out-of-band exchange). A pair below the floor does not say
  which end is slow, so each node of a failing pair is tested again on that rail against a
  node that passed it: the one that fails again gets the finding. With no such reference both
  get it, saying so.
- NCCL `all_reduce_perf` across a set (an NVL72 domain, else an SU, else a pool) launched with
  `mpirun -H host:gpus,...` from the set's first node.

Every remote command runs under `timeout` on the node and under the fan-out's command timeout
here; a tool that is missing or gives no figure is `not measured` (a fail). Slurm-job
orchestration is not here: these run over SSH whether or not the site has Slurm.
"""

from __future__ import annotations

import shlex
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace

from gpudc.catalog import current_catalog
from gpudc.plan.types import Node
from gpudc.validate import probe_script
from gpudc.validate.fanout import FanOut, HostResult, SshOptions, Target
from gpudc.validate.floors import Floor, sku_floor
from gpudc.validate.policy import Policy
from gpudc.validate.types import Finding

RAIL_MARK = "@@gpudc-rail"
MISSING_MARK = "@@gpudc-missing"
IB_MESSAGE_BYTES = 8 * 1024 * 1024  # aznhc's GPUDirect check size (8 MiB)
IB_DURATION_S = 5
NCCL_SIZE = "16G"  # the message size Azure's checks judge all_reduce busbw at


@dataclass(frozen=True, slots=True)
class Rail:
    index: int
    device: str
    gpu: int


@dataclass(slots=True)
class PairResult:
    rail: int
    server: str
    client: str
    gbps: float | None
    error: str = ""


def rails_of(node: Node) -> list[Rail]:
    """The node's compute rails: the plan's compute NICs, else the SKU's NIC count (a node
    whose plan has no compute fabric still has its NICs: mlx5_0..N-1)."""
    gpus = max(node.expected.gpu_count, 1)
    nics = sorted((n for n in node.nics if n.network == "compute" and n.rail is not None), key=lambda n: n.rail or 0)
    if nics:
        return [Rail(int(n.rail or 0), n.name, int(n.rail or 0) % gpus) for n in nics]
    sku = current_catalog().skus.get(node.sku)
    count = int(sku.fact("compute_nics")) if sku is not None and "compute_nics" in sku.facts else 0
    return [Rail(i, f"mlx5_{i}", i % gpus) for i in range(count)]


def _ib_cmd(rail: Rail, port: int, timeout: float, server: str | None) -> str:
    args = [
        "ib_write_bw", "-d", rail.device, "-p", str(port), "-s", str(IB_MESSAGE_BYTES), "-D", str(IB_DURATION_S),
        "-F", "--report_gbits", f"--use_cuda={rail.gpu}",
    ]
    if server is not None:
        args.append(server)
    return f"timeout {timeout:g} " + " ".join(shlex.quote(a) for a in args)


def ib_script(rails: Sequence[Rail], port0: int, timeout: float, server: str | None) -> str:
    """One shell script that runs every rail at once (server side when `server` is None) and
    prints each rail's output behind a marker. The client retries until its server listens."""
    lines = [
        "command -v ib_write_bw >/dev/null 2>&1 || { echo '" + MISSING_MARK + " ib_write_bw@@'; exit 0; }",
        "d=$(mktemp -d)",
    ]
    for rail in rails:
        cmd = _ib_cmd(rail, port0 + rail.index, timeout, server)
        out = f"$d/{rail.index}"
        if server is None:
            lines.append(f"( {cmd} >{out} 2>&1; echo \"rc=$?\" >>{out} ) &")
        else:  # the server may not listen yet: perftest's client fails at once, so retry
            lines.append(
                f"( for i in $(seq 1 40); do {cmd} >{out} 2>&1 && break; "
                f"grep -q 'BW average' {out} && break; sleep 0.25; done; echo \"rc=$?\" >>{out} ) &"
            )
    lines.append("wait")
    for rail in rails:
        lines.append(f"echo '{RAIL_MARK} {rail.index}@@'; cat $d/{rail.index}")
    lines.append("rm -rf \"$d\"")
    return "\n".join(lines)


def split_rails(stdout: str) -> dict[int, str]:
    parts: dict[int, str] = {}
    for chunk in stdout.split(RAIL_MARK)[1:]:
        head, _, body = chunk.partition("@@")
        if head.strip().isdigit():
            parts[int(head.strip())] = body
    return parts


def _why(result: HostResult, text: str | None) -> str:
    if result.status != "ok":
        return f"{result.status}: {result.message}"
    if MISSING_MARK in result.stdout:
        tool = result.stdout.split(MISSING_MARK, 1)[1].split("@@", 1)[0].strip()
        return f"{tool} is not installed"
    if text is None:
        return "no output for this rail"
    tail = " ".join(text.split())[-160:]
    return f"no bandwidth figure ({tail})" if tail else "no bandwidth figure"


class CrossNode:
    """Runs the cross-node measurements of a set of nodes and turns them into findings."""

    def __init__(
        self,
        ssh: SshOptions,
        policy: Policy,
        addresses: Mapping[str, str] | None = None,
        timeout: float = 120.0,
    ) -> None:
        self.ssh = replace(ssh, command_timeout=timeout + 30.0)  # the node-side timeout fires first
        self.policy = policy
        self.addresses = dict(addresses or {})
        self.timeout = timeout
        self.port0 = int(policy.threshold("ib_pair_port"))
        self.set_of: dict[str, tuple[str, ...]] = {}  # node -> the members of its NCCL set

    def _target(self, node: Node) -> Target:
        return Target(node.name, self.addresses.get(node.name, node.ssh_address))

    def _finding(
        self, rule: str, message: str, evidence: str = "", figure: tuple[float, float | None, str] | None = None,
        check: str = "",
    ) -> Finding:
        r = self.policy.rule(rule)
        f = Finding(check, r.severity, message, r.action, None, evidence[:200])
        if figure is not None:
            f.value, f.floor, f.unit = figure
        return f

    # -- ib_write_bw pairs -----------------------------------------------------------------

    def run_pairs(self, fan: FanOut, pairs: Sequence[tuple[Node, Node]]) -> list[PairResult]:
        """One fan-out for disjoint pairs: the first of each pair serves, the second connects."""
        targets: list[Target] = []
        commands: dict[str, str] = {}
        for server, client in pairs:
            rails = _common_rails(server, client)
            targets += [self._target(server), self._target(client)]
            commands[server.name] = ib_script(rails, self.port0, self.timeout, None)
            commands[client.name] = ib_script(rails, self.port0, self.timeout, self._target(server).address)
        results = {r.name: r for r in fan.run(targets, lambda t: commands[t.name])}
        out: list[PairResult] = []
        for server, client in pairs:
            res = results[client.name]
            sections = split_rails(res.stdout) if res.status == "ok" else {}
            for rail in _common_rails(server, client):
                text = sections.get(rail.index)
                parsed = probe_script.parse_perftest(text) if text else {}
                gbps = parsed.get("bw_gbps")
                out.append(PairResult(rail.index, server.name, client.name, gbps, "" if gbps is not None else _why(res, text)))
        return out

    def ib_pairs(self, nodes: Sequence[Node]) -> dict[str, list[Finding]]:
        """Pair tests over `nodes` (two or more); findings per node, with the figures."""
        found: dict[str, list[Finding]] = defaultdict(list)
        nodes = [n for n in nodes if rails_of(n)]
        if len(nodes) < 2:
            return found
        by_name = {n.name: n for n in nodes}
        rounds = _pair_rounds(nodes)
        results: list[PairResult] = []
        with FanOut(self.ssh) as fan:
            for pairs in rounds:
                results += self.run_pairs(fan, pairs)
            passed: dict[int, set[str]] = defaultdict(set)
            suspects: list[tuple[str, str, PairResult]] = []  # (suspect, its partner, failing result)
            for r in results:
                floor = _pair_floor(by_name[r.server], by_name[r.client])
                if r.gbps is None:
                    for name in (r.server, r.client):
                        other = r.client if name == r.server else r.server
                        found[name].append(
                            self._finding("not_measured", f"not measured: ib_write_bw rail {r.rail} with {other}: {r.error}",
                                          check=f"perf:ib_write_bw:rail{r.rail}")
                        )
                elif floor is not None and r.gbps < floor.value:
                    suspects += [(r.server, r.client, r), (r.client, r.server, r)]
                else:
                    passed[r.rail] |= {r.server, r.client}
                    for name in (r.server, r.client):
                        other = r.client if name == r.server else r.server
                        found[name].append(self._figure(name, other, r, floor, ok=True))
            # second round: each suspect against a node that passed that rail
            retests: list[tuple[str, str, int, PairResult]] = []
            for suspect, partner, r in suspects:
                refs = sorted(passed[r.rail] - {suspect, partner})
                if refs:
                    retests.append((suspect, refs[0], r.rail, r))
                else:
                    floor = _pair_floor(by_name[r.server], by_name[r.client])
                    f = self._figure(suspect, partner, r, floor, ok=False)
                    f.message += " (no node passed this rail to tell which end is slow)"
                    found[suspect].append(f)
            for batch in _disjoint(retests):
                pairs = [(by_name[ref], by_name[sus]) for sus, ref, _, _ in batch]
                again = {(p.client, p.rail): p for p in self.run_pairs(fan, pairs)}
                for sus, ref, rail, first in batch:
                    second = again.get((sus, rail))
                    floor = _pair_floor(by_name[sus], by_name[ref])
                    if second is None or second.gbps is None:
                        found[sus].append(self._finding(
                            "not_measured", f"not measured: ib_write_bw rail {rail} with {ref}: "
                            f"{second.error if second else 'no result'}", check=f"perf:ib_write_bw:rail{rail}"))
                    elif floor is not None and second.gbps < floor.value:
                        f = self._figure(sus, ref, second, floor, ok=False)
                        partner = first.client if first.server == sus else first.server
                        f.message += f" (also {first.gbps:g} Gb/s with {partner})"
                        found[sus].append(f)
                    else:
                        found[sus].append(self._figure(sus, ref, second, floor, ok=True))
        return found

    def _figure(self, node: str, other: str, r: PairResult, floor: Floor | None, ok: bool) -> Finding:
        assert r.gbps is not None
        bar = f"floor {floor.value:g} Gb/s" if floor else "no floor for this SKU"
        text = f"ib_write_bw rail {r.rail} with {other}: {r.gbps:g} Gb/s ({bar})"
        figure = (r.gbps, floor.value if floor else None, "Gb/s")
        if ok:
            f = Finding("", "info", text, "none", None, (floor.source if floor else "")[:200])
            f.value, f.floor, f.unit = figure
        else:
            f = self._finding("ib_bw_low", text + ": below the floor", floor.source if floor else "", figure)
        f.check = f"perf:ib_write_bw:rail{r.rail}"
        return f

    # -- NCCL across a set -----------------------------------------------------------------

    def nccl_sets(self, nodes: Sequence[Node]) -> dict[str, list[Finding]]:
        found: dict[str, list[Finding]] = defaultdict(list)
        sets = [members for members in node_sets(nodes).values() if len(members) >= 2]
        if not sets:
            return found
        with FanOut(self.ssh) as fan:
            heads = {members[0].name: members for members in sets}
            targets = [self._target(m[0]) for m in sets]
            results = fan.run(targets, lambda t: self._mpirun(heads[t.name]))
            for res in results:
                members = heads[res.name]
                for m in members:
                    self.set_of[m.name] = tuple(x.name for x in members)
                names = ", ".join(m.name for m in members)
                parsed = probe_script.parse_nccl(res.stdout) if res.status == "ok" else {}
                busbw = parsed.get("busbw_gbps")
                floors = [f for f in (sku_floor(m.sku, "nccl_multinode_busbw") for m in members) if f]
                floor = min(floors, key=lambda f: f.value) if floors else None
                for m in members:
                    if busbw is None:
                        why = _why(res, res.stdout or None) if res.status == "ok" else f"{res.status}: {res.message}"
                        found[m.name].append(self._finding(
                            "not_measured", f"not measured: NCCL all_reduce across {len(members)} nodes ({names}): {why}",
                            check="perf:nccl_multinode"))
                        continue
                    bar = f"floor {floor.value:g} GB/s" if floor else "no floor for this SKU"
                    text = f"all_reduce busbw across {len(members)} nodes: {busbw:g} GB/s ({bar})"
                    figure = (float(busbw), floor.value if floor else None, "GB/s")
                    if floor is not None and busbw < floor.value:
                        f = self._finding("nccl_multinode_low", text + ": below the floor", names, figure)
                    else:
                        f = Finding("", "info", text, "none", None, names[:200])
                        f.value, f.floor, f.unit = figure
                    f.check = "perf:nccl_multinode"
                    found[m.name].append(f)
        return found

    def _mpirun(self, members: Sequence[Node]) -> str:
        hosts = ",".join(f"{self._target(m).address}:{max(m.expected.gpu_count, 1)}" for m in members)
        ranks = sum(max(m.expected.gpu_count, 1) for m in members)
        args = [
            "mpirun", "--allow-run-as-root", "-np", str(ranks), "-H", hosts, "-x", "NCCL_DEBUG=WARN",
            "all_reduce_perf", "-b", NCCL_SIZE, "-e", NCCL_SIZE, "-f", "2", "-g", "1",
        ]
        return (
            "command -v mpirun >/dev/null 2>&1 || { echo '" + MISSING_MARK + " mpirun@@'; exit 0; }\n"
            f"timeout {self.timeout:g} " + " ".join(shlex.quote(a) for a in args) + " 2>&1"
        )

    def attribute_sets(self, found: Mapping[str, list[Finding]], suspects: set[str]) -> dict[str, list[Finding]]:
        """A set's all_reduce below its floor does not say which member is slow. The members
        whose own measurements fail (`suspects`: node-local NCCL/nvbandwidth, pair tests) keep
        the fail; the others keep the figure as info naming them. With no suspect in the set,
        every member keeps the fail (nothing tells them apart)."""
        out: dict[str, list[Finding]] = {}
        for name, items in found.items():
            named = sorted(set(self.set_of.get(name, ())) & suspects)
            kept: list[Finding] = []
            for f in items:
                if f.check == "perf:nccl_multinode" and f.severity == "fail" and f.value is not None \
                        and named and name not in suspects:
                    text = f.message.removesuffix(": below the floor")
                    f = replace(f, severity="info", action="none",
                                message=f"{text}: below the floor, attributed to {', '.join(named)} (own measurements fail)")
                kept.append(f)
            out[name] = kept
        return out

    def run(self, nodes: Sequence[Node]) -> dict[str, list[Finding]]:
        """Both measurements; findings per node name."""
        found: dict[str, list[Finding]] = defaultdict(list)
        for part in (self.ib_pairs(nodes), self.nccl_sets(nodes)):
            for name, items in part.items():
                found[name] += items
        return found


def node_sets(nodes: Sequence[Node]) -> dict[str, list[Node]]:
    """The sets an all_reduce runs across: an NVLink domain, else an SU, else a pool."""
    sets: dict[str, list[Node]] = defaultdict(list)
    for n in nodes:
        key = f"domain {n.nvlink_domain}" if n.nvlink_domain else f"su {n.su}" if n.su is not None else f"pool {n.pool}"
        sets[key].append(n)
    return dict(sets)


def _common_rails(a: Node, b: Node) -> list[Rail]:
    theirs = {r.index for r in rails_of(b)}
    return [r for r in rails_of(a) if r.index in theirs]


def _pair_floor(a: Node, b: Node) -> Floor | None:
    floors = [f for f in (sku_floor(a.sku, "ib_write_bw"), sku_floor(b.sku, "ib_write_bw")) if f]
    return min(floors, key=lambda f: f.value) if floors else None


def _pair_rounds(nodes: Sequence[Node]) -> list[list[tuple[Node, Node]]]:
    """Neighbours in plan order; an odd node out is paired with the first node, in a round of
    its own (a node takes part in one pair per round)."""
    ordered = list(nodes)
    first = [(ordered[i], ordered[i + 1]) for i in range(0, len(ordered) - 1, 2)]
    rounds = [first]
    if len(ordered) % 2 == 1:
        rounds.append([(ordered[0], ordered[-1])])
    return rounds


def _disjoint(items: list[tuple[str, str, int, PairResult]]) -> list[list[tuple[str, str, int, PairResult]]]:
    batches: list[list[tuple[str, str, int, PairResult]]] = []
    for item in items:
        for batch in batches:
            if all({item[0], item[1]}.isdisjoint({b[0], b[1]}) for b in batch):
                batch.append(item)
                break
        else:
            batches.append([item])
    return batches

