"""Seed tokens: stable, distinct per node and per site, and not derivable from names alone."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from gpudc.boot import tokens
from gpudc.plan.types import Plan


def test_token_is_stable_url_safe_and_192_bits() -> None:
    a = tokens.node_token("lab", "h200-01")
    assert a == tokens.node_token("lab", "h200-01")
    assert tokens.looks_like_token(a) and len(a) == tokens.TOKEN_CHARS == 32  # 24 bytes: 192 bits
    assert set(a) <= set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")


def test_tokens_differ_per_node_and_per_site(lab_render: tuple[Plan, Path]) -> None:
    plan, _ = lab_render
    found = tokens.node_tokens(plan)
    assert len(set(found.values())) == len(plan.nodes)
    assert found == {n.name: tokens.node_token("lab", n.name) for n in plan.nodes}  # one derivation
    assert tokens.node_token("lab", "h200-01") != tokens.node_token("other-site", "h200-01")
    # even under one key, the site is part of the message
    key = tokens.site_key("lab")
    assert tokens.derive(key, "lab", "h200-01") != tokens.derive(key, "lab2", "h200-01")


def test_token_needs_the_site_key(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    before = tokens.node_token("lab", "h200-01")
    key = tokens.key_path("lab")
    assert stat.S_IMODE(key.stat().st_mode) == 0o600 and len(key.read_bytes()) == tokens.KEY_BYTES
    assert stat.S_IMODE(key.parent.stat().st_mode) == 0o700
    # the same names under another secret dir (another key) give another token: the name alone is not enough
    monkeypatch.setenv("GPUDC_SECRET_DIR", str(tmp_path / "elsewhere"))
    assert tokens.node_token("lab", "h200-01") != before
    assert tokens.node_token("lab", "h200-01") == tokens.node_token("lab", "h200-01")


def test_seed_url_and_redaction(lab_render: tuple[Plan, Path]) -> None:
    plan, _ = lab_render
    token = tokens.node_token("lab", "gb200-01")
    assert tokens.seed_url(plan, "gb200-01", "http://10.0.0.1/gpudc/lab/") == f"http://10.0.0.1/gpudc/lab/seed/{token}/"
    assert tokens.seed_url("lab", "gb200-01", "http://x") == f"http://x/seed/{token}/"
    line = tokens.redact(f'"GET /gpudc/lab/seed/{token}/user-data HTTP/1.1" 200')
    assert token not in line and f"/seed/{token[:tokens.LOG_PREFIX]}.../user-data" in line
    assert tokens.short(token) == f"{token[:6]}..."
