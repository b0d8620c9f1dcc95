"""gpudc: infrastructure as code for GPU datacenters."""

__version__ = "0.1.0"
