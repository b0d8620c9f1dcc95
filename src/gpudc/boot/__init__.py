"""Network boot: per-node seed tokens and the seed server (`gpudc boot serve`).

A node's cloud-init seed (its user-data holds its private SSH host key) is served at
`<base>/seed/<token>/`, where the token is an HMAC of the node's name under a per-site key
(`tokens.node_token`), and only to the node's planned in-band address (`seed_server`).
"""

from __future__ import annotations

from gpudc.boot.tokens import node_token, node_tokens, seed_url

__all__ = ["node_token", "node_tokens", "seed_url"]
