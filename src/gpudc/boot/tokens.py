"""Per-node seed tokens: unguessable URL parts that only the node itself is handed.

token = base64url(HMAC-SHA256(site key, "gpudc-seed-v1" NUL site NUL node)[:24]): 192 bits,
32 URL-safe characters. The site key is 32 random bytes in the site's secret dir (mode 0600,
made on first use), so a token cannot be derived from the node's name alone, differs per node
and per site, and stays the same across renders (a reimaged node gets the same seed URL).
The renderer and the seed server both derive tokens here, and nowhere else.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import re
from pathlib import Path
from typing import TYPE_CHECKING

from gpudc import secrets
from gpudc.model.site import check_label
from gpudc.project import site_secret_dir

if TYPE_CHECKING:
    from gpudc.plan.types import Plan

#: The site key's file name in the site secret dir.
KEY_FILE = "seed-token.key"
KEY_BYTES = 32
#: Bytes of the HMAC kept in a token (192 bits; base64url of 24 bytes is 32 characters, no padding).
TOKEN_BYTES = 24
TOKEN_CHARS = 32
#: Characters of a token that may appear in logs.
LOG_PREFIX = 6
_DOMAIN = b"gpudc-seed-v1"
_TOKEN = re.compile(rf"[A-Za-z0-9_-]{{{TOKEN_CHARS}}}")


def key_path(site: str) -> Path:
    return site_secret_dir(site) / KEY_FILE


def site_key(site: str) -> bytes:
    """The site's token key (made once, mode 0600)."""
    path = secrets.secret_file(key_path(site), lambda: os.urandom(KEY_BYTES))
    key = path.read_bytes()
    if len(key) < KEY_BYTES:
        raise ValueError(f"{path}: seed token key is shorter than {KEY_BYTES} bytes")
    return key


def derive(key: bytes, site: str, node: str) -> str:
    """The token of `node` at `site` under `key` (the one derivation; see module doc)."""
    check_label(site)
    check_label(node)
    mac = hmac.new(key, b"\0".join((_DOMAIN, site.encode(), node.encode())), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(mac[:TOKEN_BYTES]).decode("ascii")


def node_token(site: str, node: str) -> str:
    """The seed token of one node (reads, or on first use makes, the site key)."""
    return derive(site_key(site), site, node)


def node_tokens(plan: Plan) -> dict[str, str]:
    """node name -> seed token for every node of the plan (the key is read once)."""
    key = site_key(plan.site.name)
    return {n.name: derive(key, plan.site.name, n.name) for n in plan.nodes}


def site_path(site: str) -> str:
    """The URL path below which the boot server serves a site's rendered tree: `/gpudc/<site>`."""
    return f"/gpudc/{site}"


def seed_path(token: str) -> str:
    """The seed folder's path below the base URL: `seed/<token>/`."""
    return f"seed/{token}/"


def seed_url(site: str | Plan, node: str, base: str) -> str:
    """`<base>/seed/<token>/`: the NoCloud seed URL of a node (what `ds=nocloud;s=` takes)."""
    name = site if isinstance(site, str) else site.site.name
    return f"{base.rstrip('/')}/{seed_path(node_token(name, node))}"


def looks_like_token(text: str) -> bool:
    return _TOKEN.fullmatch(text) is not None


def short(token: str) -> str:
    """What a log may show of a token: a short prefix."""
    return f"{token[:LOG_PREFIX]}..."


_IN_TEXT = re.compile(rf"(/seed/)([^/\s?#\"']{{1,{LOG_PREFIX}}})[^/\s?#\"']*")


def redact(text: str) -> str:
    """Text with every `/seed/<token>` cut to the token's short prefix."""
    return _IN_TEXT.sub(lambda m: f"{m.group(1)}{m.group(2)}...", text)
