"""Studies: small experiments built on the codecs (re-encoding stability, ...)."""
