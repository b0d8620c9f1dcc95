"""Entry point the Pulumi CLI runs (Pulumi.yaml: `main: src/gpudc/infra/`)."""

from gpudc.infra.program import main

main()
