"""The three roles of every run: the small policy pi_S, the big policy pi_B and the process reward model.

Config keys (model.small, model.big, model.reward), engines, token ledgers, FLOPs and reports are all keyed by
these names, in this order (the order engines are built and reported in)."""

ROLES = ("small", "big", "reward")
POLICIES = ("small", "big")  # the roles that generate steps
