"""`dcgmi diag -j` JSON, both schemas, into flat results.

Old ("DCGM GPU Diagnostic", DCGM <= 3.x): test_categories[].tests[].results[]{gpu_ids: "0,1",
status: PASS|FAIL|WARN|SKIPPED, warnings: [str | {warning, error_id}], info}.
New ("DCGM Diagnostic", DCGM 4.x, testing/python3/dcgm_diag_schema.json): test_categories[].tests[]
{name, results[]{entity_group, entity_group_id, entity_id, status, warnings[{error_category,
error_id, error_severity, warning}]}, test_summary{status}}, plus runtime_error.
"""

from __future__ import annotations

import json
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
