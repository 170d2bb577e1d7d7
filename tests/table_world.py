"""The exact-table world the scheduler and runtime tests share: pi_S's and pi_B's distributions over four steps,
the PRM's reward of each, and the steps' texts (gsi.engines.table)."""

PI_S = [0.15, 0.35, 0.3, 0.2]
PI_B = [0.1, 0.2, 0.3, 0.4]
R = [0.3, 0.9, 0.5, 0.7]
TEXTS = ["done\n\n", "a\n\n", "b\n\n", "so \\boxed{1}\n\n"]
