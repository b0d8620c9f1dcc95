"""The local lab: isolated Debian 12 hosts with simulated GPUs and BMCs, on this machine.

Library API (gpudc.lab.api): `up(stack="lab", nodes=None) -> status`, `down()`, `status()`,
`inject(node, fault, arg=None, hardware=False)`, `clear(node)`, `refresh_repo()`,
`ensure_blackhole()`, `power(node, reset_type)`, `reimage(node)`, `fault_names()`.
CLI: `gpudc lab up [--nodes N] | down | status [--json] | inject NODE FAULT [ARG] [--hardware] |
clear NODE | faults | blackhole`.

Pieces: rootfs (mmdebstrap tree, cached as zstd), net (bridge, namespaces, blackhole route),
hosts (tmpfs overlays, systemd-nspawn), services (apt-cacher-ng, stand-in NVIDIA repo, BMC
process), bmc (sushy-tools emulator with a lab systems driver), faults, state (run-time JSON
under /run/gpudc-lab with a lock). The simulated NVML library (nvml/, gpu_state.py, shims/)
belongs to its own area.
"""
