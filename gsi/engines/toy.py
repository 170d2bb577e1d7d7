"""`python -m gsi.engines.toy --eval N --json`: the toy world's build and skill, under the name the engines' side
of the project gives it (issue 21). The models, their recipe and the measurements live in gsi/models
(gsi.models.toy); the engines serve them as `toy://<role>` (gsi.engines.resolve). Same flags, same JSON object:
greedy_small, greedy_big, prm_auc_paired, prm_auc_samples, prm_step_index_corr, build_s, fingerprint, ...
"""

from __future__ import annotations

from gsi.models.toy import main

if __name__ == "__main__":
    main()
