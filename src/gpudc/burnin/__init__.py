"""Site acceptance in stages: sanity -> validation -> performance -> stress (`gpudc burnin`)."""
