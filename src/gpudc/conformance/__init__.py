"""Partner conformance: node state read from each node against its software profile, plus its
latest verdicts, as one canonical JSON report signed with the site's SSH signing key.

    report = build_report(plan, states, history)      # gpudc.conformance.report
    sign_report(site, path)                           # gpudc.conformance.signing
    verify_report(path, allowed_signers)              # plain `ssh-keygen -Y verify` underneath
"""
