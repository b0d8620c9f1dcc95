"""Parsers of captured output (for `gpudc analyze`): each returns the probe's facts shape."""
