"""Reference implementations our strategies are checked against (``avalanche``: Avalanche's Naive,
EWC and Replay on the same stream, net and init)."""
