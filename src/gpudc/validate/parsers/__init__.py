"""Parsers of captured output (for `gpudc analyze`): each returns facts of the probe's schema
(gpudc.validate.facts), checked against it."""
