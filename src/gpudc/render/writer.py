"""Writing the rendered tree: one place that knows modes, the index and stale files."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

MANIFEST = ".gpudc-render"


@dataclass(frozen=True, slots=True)
class Written:
    path: str  # relative to the tree root, with '/'
    kind: str  # the folder's kind (dhcp, dns, pxe, ...)
    what: str  # one line for the README index
    secret: bool  # holds a private key: mode 0600, never shown in diffs or reports


@dataclass(slots=True)
class Writer:
    root: Path
    written: list[Written] = field(default_factory=list)
    placeholders: list[str] = field(default_factory=list)  # values an operator must fill in
    notes: list[str] = field(default_factory=list)

    def write(self, rel: str, text: str, kind: str, what: str, secret: bool = False) -> Path:
        path = self.root / rel
        data = text.encode()
        mode = 0o600 if secret else 0o644
        try:
            same = path.stat().st_size == len(data) and path.read_bytes() == data
        except OSError:
            same = False
        if same:  # leave an unchanged file alone (no byte, no mtime changes); fix only its mode
            if path.stat().st_mode & 0o777 != mode:
                os.chmod(path, mode)
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
            try:
                os.fchmod(fd, mode)  # an existing file keeps its old mode through O_CREAT
                os.write(fd, data)
            finally:
                os.close(fd)
        self.written.append(Written(rel, kind, what, secret))
        return path

    def finish(self) -> list[Path]:
        """Write the manifest, remove files an earlier render wrote that this one did not."""
        paths = sorted(w.path for w in self.written)
        manifest = self.root / MANIFEST
        if manifest.is_file():
            keep = set(paths)
            for line in manifest.read_text().splitlines():
                rel = line.strip()
                if not rel or rel in keep or rel.startswith("/") or ".." in Path(rel).parts:
                    continue
                stale = self.root / rel
                if stale.is_file():
                    stale.unlink()
                    parent = stale.parent
                    while parent != self.root and parent.is_dir() and not any(parent.iterdir()):
                        parent.rmdir()
                        parent = parent.parent
        text = "".join(f"{p}\n" for p in paths)
        if not manifest.is_file() or manifest.read_text() != text:
            manifest.write_text(text)
        return [self.root / p for p in paths]
