"""The typed site model and its loader."""

from gpudc.model.loader import list_stacks, load_site, read_config, resolve_stack, site_from_config
from gpudc.model.site import Site

__all__ = ["Site", "list_stacks", "load_site", "read_config", "resolve_stack", "site_from_config"]
