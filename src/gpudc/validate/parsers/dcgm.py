"""`dcgmi diag -j` JSON, both schemas, into flat results.

Old ("DCGM GPU Diagnostic", DCGM <= 3.x): test_categories[].tests[].results[]{gpu_ids: "0,1",
status: PASS|FAIL|WARN|SKIPPED, warnings: [str | {warning, error_id}], info}.
New ("DCGM Diagnostic", DCGM 4.x, testing/python3/dcgm_diag_schema.json): test_categories[].tests[]
{name, results[]{entity_group, entity_group_id, entity_id, status, warnings[{error_category,
error_id, error_severity, warning}]}, test_summary{status}}, plus runtime_error.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

SCHEMA_KEYS = ("DCGM GPU Diagnostic", "DCGM Diagnostic")


@dataclass(slots=True)
class DiagResult:
    test: str
    gpu: int | None
    status: str  # pass | fail | warn | skip | other
    message: str


def _status(raw: Any) -> str:
    s = str(raw or "").strip().lower()
    if s in ("pass", "passed", "ok", "success"):
        return "pass"
    if s in ("fail", "failed", "error"):
        return "fail"
    if s in ("warn", "warning"):
        return "warn"
    if s in ("skip", "skipped", "not run", "notrun", "n/a"):
        return "skip"
    return s or "other"


def _warnings(result: dict[str, Any]) -> str:
    texts = []
    for w in result.get("warnings") or []:
        if isinstance(w, dict):
            code = w.get("error_id")
            texts.append(f"{w.get('warning', '')}" + (f" (error {code})" if code is not None else ""))
        else:
            texts.append(str(w))
    return "; ".join(t.strip() for t in texts if t and t.strip())


def load_document(text: str) -> dict[str, Any]:
    """The JSON document in dcgmi's output (which may carry text before it). ValueError if none."""
    start = text.find("{")
    if start < 0:
        raise ValueError("no JSON object")
    doc = json.loads(text[start:])
    if not isinstance(doc, dict) or not any(k in doc for k in SCHEMA_KEYS):
        raise ValueError(f"no {' or '.join(repr(k) for k in SCHEMA_KEYS)} key")
    return doc


def normalize(doc: dict[str, Any]) -> tuple[list[DiagResult], str | None]:
    """(results, runtime error) of a dcgmi diag document in either schema."""
    key = next((k for k in SCHEMA_KEYS if k in doc), None)
    root = doc.get(key) if key else doc
    if not isinstance(root, dict):
        return [], "diag document has no results"
    runtime = root.get("runtime_error") or doc.get("runtime_error")
    results: list[DiagResult] = []
    for cat in root.get("test_categories") or []:
        if not isinstance(cat, dict):
            continue
        for test in cat.get("tests") or []:
            if not isinstance(test, dict):  # the old schema has nulls between tests
                continue
            name = str(test.get("name") or "unknown")
            rows = [r for r in test.get("results") or [] if isinstance(r, dict)]
            for r in rows:
                status = _status(r.get("status"))
                if "entity_id" in r:
                    group = str(r.get("entity_group", "GPU")).upper()
                    gpus: list[int | None] = [int(r["entity_id"])] if group == "GPU" else [None]
                else:
                    ids = [x.strip() for x in str(r.get("gpu_ids", "")).split(",") if x.strip().isdigit()]
                    gpus = [int(x) for x in ids] if len(ids) == 1 else [None]
                for gpu in gpus:
                    results.append(DiagResult(name, gpu, status, _warnings(r)))
            summary = test.get("test_summary")
            if not rows and isinstance(summary, dict):
                results.append(DiagResult(name, None, _status(summary.get("status")), ""))
    return results, str(runtime) if runtime else None


# -- `dcgmi diag` text (the table DCGM 3.x prints without -j) ---------------------------------

TEXT_HEAD_RE = re.compile(r"^\|\s*Diagnostic\s*\|\s*Result\s*\|\s*$", re.M)
TEXT_SECTION_RE = re.compile(r"^[|+]-+\s+(?P<name>[A-Za-z][\w ]*?)\s+-+\+-*[|+]?\s*$")
TEXT_BORDER_RE = re.compile(r"^\+[-=]+\+[-=]+\+\s*$")
TEXT_RESULT_RE = re.compile(
    r"^(?P<status>Pass|Fail|Warn|Skip|Not Run)\b(?:\s*-\s*(?:(?P<all>All)|GPUs?:?\s*(?P<gpus>[\d,\s]+)))?",
    re.I,
)
TEXT_GPU_RE = re.compile(r"^GPU\s*(\d+)\b")
#: rows of the Metadata section (and of the header): not tests
_NOT_TESTS = {"metadata"}


def looks_like_text(text: str) -> bool:
    """A `dcgmi diag` table: its `| Diagnostic | Result |` header or a section border line."""
    head = text[:200000]
    if TEXT_HEAD_RE.search(head):
        return True
    return any(TEXT_SECTION_RE.match(line.strip()) for line in head.splitlines()[:200])


def _cells(line: str) -> tuple[str, str, bool] | None:
    """(name cell, result cell, row closed) of a table row, the cells without their padding."""
    if not line.startswith("|") or line.count("|") < 2:
        return None
    inner = line[1:]
    closed = inner.rstrip().endswith("|")
    if closed:
        inner = inner.rstrip()[:-1]
    name, _, result = inner.partition("|")
    # one pad space each side; a wrapped cell's text may run into the border, so strip no more
    result = result[1:] if result.startswith(" ") else result
    result = result[:-1] if closed and result.endswith(" ") else result
    return name.strip(), result, closed


def parse_text(text: str) -> dict[str, Any]:
    """A `dcgmi diag` table -> a document of the old `-j` schema ("DCGM GPU Diagnostic"), so the
    checks judge it as they judge dcgmi's JSON. `Pass - GPUs: 0, 2, 3` / `Fail - GPU: 1` rows give
    a result per GPU; a `Warning` row (wrapped over several lines) goes to the failed or warned
    results of its test (of its GPU when it names one). A table that does not end with its closing
    border is cut short: the document carries `runtime_error` saying so. ValueError when no test
    row can be read."""
    categories: list[dict[str, Any]] = []
    category: dict[str, Any] | None = None
    test: dict[str, Any] | None = None
    note: list[str] | None = None  # the Warning being read (its wrapped lines)
    note_kind = ""
    metadata: dict[str, str] = {}
    last_row = ""
    complete = False
    seen_table = False

    def flush_note() -> None:
        nonlocal note
        if note is not None and test is not None and note_kind == "warning":
            # a wrapped cell breaks anywhere (`desire` / `d power`); a break between words keeps
            # its space at the start of the next line, so each piece loses only its padding
            message = " ".join("".join(piece.rstrip() for piece in note).split())
            m = TEXT_GPU_RE.match(message)
            gpu = m.group(1) if m else None
            targets = [r for r in test["results"] if r["status"] in ("FAIL", "WARN")]
            if gpu is not None:
                targets = [r for r in targets if gpu in r["gpu_ids"].split(",")] or targets
            for r in targets:
                r["warnings"].append(message)
        note = None

    for raw in text.splitlines():
        line = raw.rstrip()
        stripped = line.strip()
        section = TEXT_SECTION_RE.match(stripped)
        if section:
            flush_note()
            seen_table = True
            complete = False
            test = None
            name = section.group("name").strip()
            category = None if name.lower() in _NOT_TESTS else {"category": name, "tests": []}
            if category is not None:
                categories.append(category)
            continue
        if TEXT_BORDER_RE.match(stripped):
            flush_note()
            seen_table = True
            complete = category is not None or bool(categories)
            continue
        cells = _cells(stripped)
        if cells is None:
            if stripped.startswith("|") and stripped.strip("| "):
                last_row = stripped.strip("| ")  # a row cut before its result
            continue
        seen_table = True
        name, result, _closed = cells
        complete = False
        if name.lower() == "diagnostic" and result.strip().lower() == "result":
            continue
        last_row = name or last_row
        if category is None:
            if name and categories == []:
                metadata[name] = result.strip()
            continue
        if not name:  # a continuation: another result of the test, or the note's next line
            m = TEXT_RESULT_RE.match(result.strip())
            if note is None and test is not None and m:
                test["results"] += _results(m)
            elif note is not None:
                note.append(result)
            continue
        flush_note()
        if name.lower() in ("warning", "info"):
            note, note_kind = [result], name.lower()
            continue
        m = TEXT_RESULT_RE.match(result.strip())
        if m is None:
            raise ValueError(f"row {name!r}: result {result.strip()!r} is not Pass/Fail/Warn/Skip")
        test = {"name": name, "results": _results(m)}
        category["tests"].append(test)
    flush_note()
    tests = [t for c in categories for t in c["tests"]]
    if not seen_table or not tests:
        raise ValueError("no test rows in the dcgmi diag table")
    root: dict[str, Any] = {"test_categories": categories}
    if metadata:
        root["metadata"] = metadata
    if not complete:
        root["runtime_error"] = (
            f"the dcgmi diag table is incomplete (it ends after {last_row!r}): "
            "the tests after it are not known"
        )
    return {"DCGM GPU Diagnostic": root}


def _results(m: re.Match[str]) -> list[dict[str, Any]]:
    status = m.group("status").upper().replace("NOT RUN", "SKIPPED").replace("SKIP", "SKIPPED")
    status = "SKIPPED" if status.startswith("SKIP") else status
    gpus = [g.strip() for g in (m.group("gpus") or "").split(",") if g.strip().isdigit()]
    if not gpus:
        return [{"gpu_ids": "", "status": status, "warnings": []}]
    return [{"gpu_ids": g, "status": status, "warnings": []} for g in gpus]
