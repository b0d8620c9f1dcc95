"""gpudc: infrastructure as code for GPU datacenters."""

from pathlib import Path

__version__ = "0.1.0"

#: Root of a source checkout (catalog/, stacks/, templates/, playbooks/ live here).
PROJECT_ROOT = Path(__file__).resolve().parents[2]
