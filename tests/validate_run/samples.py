"""Verdicts shaped like a real run's, for the report and history tests."""

from __future__ import annotations

from gpudc.validate.types import Finding, Verdict


def sample_verdicts() -> list[Verdict]:
    return [
        Verdict.from_findings("h200-01", [Finding("persistence", "warn", "persistence mode off on 8 GPUs")]),
        Verdict.from_findings("h200-02", []),
        Verdict.from_findings(
            "gb200-01",
            [
                Finding("xid", "fail", "Xid 79 on GPU 2: GPU has fallen off the bus", "reboot", 2,
                        'NVRM: Xid (PCI:0000:1b:00): 79, pid=\'<unknown>\', name=<unknown>, GPU has fallen off the bus.'),
                Finding("remap", "fail", "row remap pending", "reset_gpu", 1, "pending=1"),
                Finding("temperature", "warn", 'GPU 0 at 84 C <near "limit">', "none", 0, "temp=84"),
            ],
        ),
        Verdict.unreachable("gb200-02", "ssh.connect", "gb200-02 (10.213.0.14:22): connect failed: Connection refused"),
    ]
