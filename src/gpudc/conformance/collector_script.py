#!/usr/bin/env python3
"""gpudc conformance collector: one self-contained, stdlib-only script.

Sent over SSH and run with `python3 - --packages a,b --services x,y`. It reads what a node
actually runs (no judgement; gpudc compares) and prints ONE line `@@gpudc-conformance@@ {json}`:

- packages: dpkg-query version, dpkg state and selection (hold) of each named package
- kernel module: /proc/driver/nvidia/version, /sys/module/nvidia/version, `modinfo -F license`
  (the open module is "Dual MIT/GPL", the proprietary one "NVIDIA")
- NVML (in a child process under a timeout, so a hung or crashing driver library costs at most
  that timeout): driver and CUDA driver versions, each GPU's name and VBIOS; else nvidia-smi
- CUDA toolkits (/usr/local/cuda-X.Y/version.json), services (systemctl is-active), the running
  kernel command line and the one provisioning configured, NIC firmware (/sys/class/infiniband)

Every subprocess runs under a timeout; a missing tool leaves its fact None, never a crash.
Importable without side effects (the tests use its readers).
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import re
import shlex
import shutil
import socket
import subprocess
import sys
from typing import Any

SCHEMA = 1
MARKER = "@@gpudc-conformance@@"
GRUB_CONFIG = "/etc/default/grub.d/99-gpudc.cfg"

#: Runs in a child python3: NVML facts as one JSON line (pynvml, as the validator's probe uses).
NVML_CHILD = r"""
import json, pynvml as nv
def t(v): return v.decode() if isinstance(v, bytes) else str(v)
nv.nvmlInit()
out = {"driver_version": t(nv.nvmlSystemGetDriverVersion()), "gpus": []}
try:
    c = nv.nvmlSystemGetCudaDriverVersion_v2()
    out["cuda_driver_version"] = "%d.%d" % (c // 1000, (c % 1000) // 10)
except Exception:
    out["cuda_driver_version"] = None
for i in range(nv.nvmlDeviceGetCount()):
    h = nv.nvmlDeviceGetHandleByIndex(i)
    g = {"index": i}
    for key, call in (("name", "nvmlDeviceGetName"), ("vbios", "nvmlDeviceGetVbiosVersion")):
        try:
            g[key] = t(getattr(nv, call)(h))
        except Exception:
            g[key] = None
    out["gpus"].append(g)
nv.nvmlShutdown()
print(json.dumps(out))
"""


def run(cmd: list[str], timeout: float, stdin: str | None = None) -> tuple[int, str, str] | None:
    """(rc, stdout, stderr) under a timeout (rc 124 when it expired); None when the tool is missing."""
    exe = shutil.which(cmd[0])
    if exe is None:
        return None
    try:
        proc = subprocess.run(
            [exe, *cmd[1:]],
            input=stdin,
            capture_output=True,
            text=True,
            timeout=timeout,
            start_new_session=True,
        )
    except subprocess.TimeoutExpired:
        return 124, "", f"timed out after {timeout:g} s"
    except OSError as exc:
        return 126, "", str(exc)
    return proc.returncode, proc.stdout, proc.stderr


def read(path: str) -> str | None:
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            return f.read()
    except OSError:
        return None


def parse_dpkg(text: str) -> dict[str, dict[str, str]]:
    """dpkg-query lines `name<TAB>version<TAB>want<TAB>status-abbrev` -> name -> facts."""
    found: dict[str, dict[str, str]] = {}
    for line in text.splitlines():
        parts = line.split("\t")
        if len(parts) >= 4 and parts[0]:
            found[parts[0]] = {"version": parts[1], "want": parts[2], "status": parts[3].strip()}
    return found


def parse_kernel_version_file(text: str | None) -> dict[str, str | None]:
    """The first line of /proc/driver/nvidia/version -> module version and flavour.

    Open:        `NVRM version: NVIDIA UNIX Open Kernel Module for x86_64  580.95.05  Release Build ...`
    Proprietary: `NVRM version: NVIDIA UNIX x86_64 Kernel Module  570.195.03  ...`
    """
    line = (text or "").splitlines()[0] if text and text.strip() else ""
    if "Kernel Module" not in line:
        return {"version": None, "flavour": None}
    m = re.search(r"Kernel Module(?:\s+for\s+\S+)?\s+(\d+\.\d+(?:\.\d+)?)", line)
    return {
        "version": m.group(1) if m else None,
        "flavour": "open" if "Open Kernel Module" in line else "proprietary",
    }


def flavour_from_license(license_text: str | None) -> str | None:
    text = (license_text or "").strip()
    if not text:
        return None
    return "open" if "GPL" in text or "MIT" in text else "proprietary"


def parse_grub_config(text: str | None) -> list[str] | None:
    """The kernel arguments gpudc's GRUB drop-in adds (None when there is no drop-in)."""
    if text is None:
        return None
    args: list[str] = []
    for line in text.splitlines():
        line = line.strip()
        if line.startswith("GRUB_CMDLINE_LINUX_DEFAULT="):
            value = line.split("=", 1)[1]
            try:
                words = shlex.split(value)
            except ValueError:
                continue
            for word in " ".join(words).split():
                if not word.startswith("$"):
                    args.append(word)
    return args


def collect_packages(names: list[str], timeout: float) -> dict[str, Any] | None:
    if not names:
        return {}
    res = run(
        ["dpkg-query", "-W", "-f", "${Package}\t${Version}\t${db:Status-Want}\t${db:Status-Abbrev}\n", *names],
        timeout,
    )
    if res is None:
        return None
    # dpkg-query exits 1 when some name is unknown; the known ones are still printed
    found = parse_dpkg(res[1])
    return {name: found.get(name) for name in names}


def collect_module(timeout: float) -> dict[str, Any]:
    proc = parse_kernel_version_file(read("/proc/driver/nvidia/version"))
    sys_version = (read("/sys/module/nvidia/version") or "").strip() or None
    license_text = None
    res = run(["modinfo", "-F", "license", "nvidia"], timeout)
    if res is not None and res[0] == 0:
        license_text = res[1].strip() or None
    flavour = proc["flavour"]
    source = "/proc/driver/nvidia/version" if flavour else None
    if flavour is None and license_text:
        flavour, source = flavour_from_license(license_text), "modinfo"
    return {
        "loaded_version": proc["version"] or sys_version,
        "flavour": flavour,
        "flavour_source": source,
        "license": license_text,
    }


def collect_nvml(timeout: float) -> dict[str, Any]:
    res = run([sys.executable or "python3", "-c", NVML_CHILD], timeout)
    if res is not None and res[0] == 0:
        try:
            data = json.loads(res[1].strip().splitlines()[-1])
            data["source"] = "nvml"
            return dict(data)
        except (ValueError, IndexError):
            pass
    nvml_error = "nvml: " + ((res[2].strip().splitlines() or ["no output"])[-1] if res else "no python3")
    res = run(
        ["nvidia-smi", "--query-gpu=index,name,vbios_version,driver_version", "--format=csv,noheader"], timeout
    )
    if res is None or res[0] != 0:
        return {"source": None, "error": nvml_error[:200], "driver_version": None, "gpus": []}
    gpus, driver = [], None
    for line in res[1].splitlines():
        cells = [c.strip() for c in line.split(",")]
        if len(cells) >= 4 and cells[0].isdigit():
            gpus.append({"index": int(cells[0]), "name": cells[1], "vbios": cells[2]})
            driver = cells[3]
    return {"source": "nvidia-smi", "driver_version": driver, "cuda_driver_version": None, "gpus": gpus}


def collect_toolkits() -> dict[str, str]:
    toolkits: dict[str, str] = {}
    for path in sorted(glob.glob("/usr/local/cuda-*/version.json")):
        try:
            with open(path) as f:
                version = json.load(f)["cuda"]["version"]
        except (OSError, ValueError, KeyError, TypeError):
            continue
        toolkits[os.path.basename(os.path.dirname(path)).removeprefix("cuda-")] = str(version)
    return toolkits


def collect_services(units: list[str], timeout: float) -> dict[str, str] | None:
    states: dict[str, str] = {}
    for unit in units:
        res = run(["systemctl", "is-active", unit], timeout)
        if res is None:
            return None
        states[unit] = (res[1].strip().splitlines() or ["unknown"])[0]
    return states


def collect_nics() -> list[dict[str, Any]]:
    nics = []
    for dev in sorted(glob.glob("/sys/class/infiniband/*")):
        nics.append(
            {
                "device": os.path.basename(dev),
                "firmware": (read(os.path.join(dev, "fw_ver")) or "").strip() or None,
                "board_id": (read(os.path.join(dev, "board_id")) or "").strip() or None,
            }
        )
    return nics


def collect(args: argparse.Namespace) -> dict[str, Any]:
    timeout = args.timeout
    res = run(["systemd-detect-virt", "--container"], timeout)
    container = res[1].strip() if res is not None and res[0] == 0 else None
    return {
        "schema": SCHEMA,
        "hostname": socket.gethostname(),
        "arch": os.uname().machine,
        "container": container,
        "packages": collect_packages(args.packages, timeout),
        "module": collect_module(timeout),
        "nvml": collect_nvml(args.nvml_timeout),
        "cuda_toolkits": collect_toolkits(),
        "services": collect_services(args.services, timeout),
        "cmdline": (read("/proc/cmdline") or "").split(),
        "cmdline_configured": parse_grub_config(read(GRUB_CONFIG)),
        "nics": collect_nics(),
    }


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="gpudc-conformance")
    p.add_argument("--packages", default="")
    p.add_argument("--services", default="")
    p.add_argument("--timeout", type=float, default=10.0)
    p.add_argument("--nvml-timeout", type=float, default=20.0)
    args = p.parse_args(sys.argv[1:] if argv is None else argv)
    args.packages = [x for x in args.packages.split(",") if x]
    args.services = [x for x in args.services.split(",") if x]
    try:
        facts = collect(args)
    except Exception as exc:  # one line of output whatever happens; gpudc reports the error
        facts = {"schema": SCHEMA, "error": f"{type(exc).__name__}: {exc}"[:300]}
    sys.stdout.write(MARKER + " " + json.dumps(facts, sort_keys=True) + "\n")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
