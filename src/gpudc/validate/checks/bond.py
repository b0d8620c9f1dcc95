"""A dual-homed node's in-band bond (bond0, /proc/net/bonding): 802.3ad, every member up in the active
aggregator, and its LACP partner the leaf pair's EVPN multihoming system MAC (the plan's expectation)."""

from __future__ import annotations

from gpudc.plan.types import HOST_BOND
from gpudc.validate.checks.base import Context
from gpudc.validate.facts import Bond, BondMember
from gpudc.validate.types import Finding

MODE = "IEEE 802.3ad Dynamic link aggregation"
# IEEE 802.1AX LACP port state bits: synchronization, collecting, distributing
SYNC, COLLECTING, DISTRIBUTING = 0x08, 0x10, 0x20


def member_problem(bond: Bond, member: BondMember) -> str | None:
    """Why a member carries no traffic of the bond, or None when it does."""
    if (member["mii_status"] or "").lower() != "up":
        return f"MII {member['mii_status'] or 'unknown'}"
    if member["aggregator_id"] != bond["aggregator_id"]:
        return f"aggregator {member['aggregator_id']}, not the active {bond['aggregator_id']}"
    actor, partner = member["actor_state"], member["partner_state"]
    working = SYNC | COLLECTING | DISTRIBUTING
    if actor is None or actor & working != working:
        return f"LACP actor state {actor if actor is None else hex(actor)} (not in sync, collecting and distributing)"
    if partner is None or not partner & SYNC:
        return f"LACP partner state {partner if partner is None else hex(partner)} (partner not in sync)"
    return None


def check(ctx: Context) -> list[Finding]:
    exp = ctx.expected
    bonding = ctx.facts.get("bonding")
    if exp is None or exp.bond_members <= 0 or bonding is None:
        return []
    bond = bonding["bonds"].get(HOST_BOND)
    if bond is None:
        if bonding["driver"] == "absent":
            return [ctx.finding("bond", "bond_unverified", "the kernel has no bonding driver: dual-homing not seen",
                                None, f"expected {HOST_BOND} over {exp.bond_members} in-band ports")]
        others = ", ".join(sorted(bonding["bonds"])) or "none"
        return [ctx.finding("bond", "bond_missing", f"{HOST_BOND} missing on a dual-homed node", None,
                            f"expected 802.3ad over {exp.bond_members} in-band ports; bonds: {others}")]
    if bond["mode"] != MODE:
        return [ctx.finding("bond", "bond_missing", f"{HOST_BOND} is {bond['mode'] or 'of unknown mode'}, not 802.3ad",
                            None, f"expected LACP with the leaf pair (partner {exp.bond_partner_mac})")]
    out: list[Finding] = []
    members = bond["members"]
    problems = {m["name"]: why for m in members if (why := member_problem(bond, m)) is not None}
    working = len(members) - len(problems)
    if working < exp.bond_members:
        named = "; ".join(f"{name}: {why}" for name, why in problems.items())
        out.append(ctx.finding("bond", "bond_member_down",
                               f"{working} of {exp.bond_members} {HOST_BOND} members carry traffic", None,
                               named or f"{len(members)} members in {HOST_BOND}"))
    want = (exp.bond_partner_mac or "").lower()
    seen = {m["name"]: m["partner_mac"] for m in members if m["partner_mac"] and m["name"] not in problems}
    if bond["partner_mac"] not in (None, "00:00:00:00:00:00"):  # all zeros: no partner at all
        seen[HOST_BOND] = bond["partner_mac"]
    wrong = {name: mac for name, mac in seen.items() if want and mac != want}
    if wrong:
        out.append(ctx.finding("bond", "bond_partner_wrong",
                               f"LACP partner of {HOST_BOND} is not the leaf pair's ES system MAC {want}", None,
                               ", ".join(f"{name}: {mac}" for name, mac in sorted(wrong.items()))
                               + " (cabled to other leaves, or their Ethernet segment is not configured)"))
    return out
