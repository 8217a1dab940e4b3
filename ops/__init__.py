"""The operator's tools against a live system, local or in a cluster: the shop's client,
shopctl, the demo data, the config center's defaults, the audit, the smoke check, and the
rights table with what applies it (trust/).

Everything here is told where the system is (options, or the SHOP_* environment a
Kubernetes Job sets), so the Jobs' image carries it alone; a local stack's files and ports
are devstack's, whose commands (``--profile``) call into this package, never the reverse.
"""
