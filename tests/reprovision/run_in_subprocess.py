"""Run the workflow on the lab plan in its own process (for the kill-and-rerun test).

argv: STATE_DIR DRAIN_FILE NODE HANG_STEP. HANG_STEP's callable never returns, so the test can kill
the process while that step runs.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from world import World, hang

from gpudc.plan import load_plan
from gpudc.reprovision.state import StateStore
from gpudc.reprovision.workflow import reprovision_nodes


def main() -> None:
    state, drain, node, hang_step = sys.argv[1:5]
    world = World(Path(drain))
    world.faults[hang_step] = hang
    reprovision_nodes(load_plan("lab"), [node], backends=world.backends(), store=StateStore(Path(state)),
                      report=lambda *a: print(*a, flush=True))


if __name__ == "__main__":
    main()
