"""The lab's simulated NVML: a C library built against the real ``nvml.h``.

``build_library(out_dir)`` compiles ``simnvml.c`` into ``out_dir/libnvidia-ml.so.1`` (cached by a
hash of the source, the header and the compiler flags). Installed on a lab host as
``libnvidia-ml.so.1`` in a directory the dynamic loader searches (or named by LD_LIBRARY_PATH),
it lets the unmodified ``pynvml`` bindings report the GPUs described by the host's JSON state
file (``$GPUDC_LAB_NVML_STATE``, default ``/etc/gpudc-lab/nvml-state.json``).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import tempfile
from importlib import metadata
from pathlib import Path

SOURCE = Path(__file__).with_name("simnvml.c")
LIBRARY_NAME = "libnvidia-ml.so.1"
STATE_ENV = "GPUDC_LAB_NVML_STATE"
DEFAULT_STATE_PATH = Path("/etc/gpudc-lab/nvml-state.json")
#: Where the lab installs the library on a host (a directory ld.so searches by default).
HOST_LIBRARY_PATH = Path("/usr/lib/x86_64-linux-gnu") / LIBRARY_NAME
HEADER_DIST = "nvidia-nvml-dev"
CFLAGS = (
    "-std=gnu11",
    "-O2",
    "-Wall",
    "-Wextra",
    "-Wmissing-prototypes",
    "-Werror",
    "-shared",
    "-fPIC",
    "-Wl,-soname,libnvidia-ml.so.1",
)
_STAMP = ".simnvml.sha256"


class NvmlBuildError(RuntimeError):
    """The simulated NVML library could not be built (no compiler, no header, compile error)."""


def find_header() -> Path:
    """``nvml.h`` from the installed ``nvidia-nvml-dev`` distribution (or ``$GPUDC_NVML_INCLUDE``)."""
    override = os.environ.get("GPUDC_NVML_INCLUDE")
    if override:
        header = Path(override) / "nvml.h"
        if header.is_file():
            return header
        raise NvmlBuildError(f"GPUDC_NVML_INCLUDE={override}: no nvml.h there")
    try:
        dist = metadata.distribution(HEADER_DIST)
    except metadata.PackageNotFoundError:
        raise NvmlBuildError(
            f"the Python package {HEADER_DIST} (which ships nvml.h) is not installed; pip install {HEADER_DIST}"
        ) from None
    for entry in dist.files or []:
        if entry.name == "nvml.h":
            path = Path(str(dist.locate_file(entry)))
            if path.is_file():
                return path
    raise NvmlBuildError(f"the installed {HEADER_DIST} package has no nvml.h")


def _digest(header: Path, compiler: str) -> str:
    h = hashlib.sha256()
    h.update(SOURCE.read_bytes())
    h.update(b"\0")
    h.update(header.read_bytes())
    h.update(b"\0")
    h.update(" ".join((compiler, *CFLAGS)).encode())
    return h.hexdigest()


def build_library(out_dir: Path) -> Path:
    """Compile the simulated NVML into ``out_dir``; return the path of ``libnvidia-ml.so.1``.

    A second call with the same source, header and flags returns the cached library at once.
    """
    out_dir = Path(out_dir)
    header = find_header()
    compiler = os.environ.get("CC") or shutil.which("gcc") or shutil.which("cc")
    if not compiler:
        raise NvmlBuildError("no C compiler found (install gcc)")
    digest = _digest(header, compiler)
    library = out_dir / LIBRARY_NAME
    stamp = out_dir / _STAMP
    if library.is_file() and stamp.is_file() and stamp.read_text().strip() == digest:
        return library
    out_dir.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=".libnvidia-ml.", suffix=".tmp", dir=out_dir)
    os.close(fd)
    tmp = Path(tmp_name)
    cmd = [compiler, *CFLAGS, f"-I{header.parent}", "-o", str(tmp), str(SOURCE)]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=False)
        if proc.returncode != 0:
            raise NvmlBuildError(f"{' '.join(cmd)} failed:\n{proc.stderr.strip()}")
        tmp.chmod(0o755)
        os.replace(tmp, library)  # atomic: a concurrent loader never sees a half-written file
    except subprocess.TimeoutExpired:
        raise NvmlBuildError(f"{compiler} took more than 120 s") from None
    finally:
        tmp.unlink(missing_ok=True)
    stamp.write_text(digest + "\n")
    return library


__all__ = [
    "DEFAULT_STATE_PATH",
    "HOST_LIBRARY_PATH",
    "LIBRARY_NAME",
    "STATE_ENV",
    "NvmlBuildError",
    "build_library",
    "find_header",
]
