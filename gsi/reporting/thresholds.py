"""Which scale an accept threshold is on, and its value on the scale that figures and tables share.

GSI's test (gsi.methods.gsi, method.threshold_on) compares a threshold with the tilted reward r~ = r +
log(pi_B/pi_S)/beta (`tilted`: the paper's u), with the score s = beta * r~ (`score`: the reference code's
`s > 10`), or with the PRM's raw reward r (`raw`). A score threshold s is the tilted threshold u = s / beta, so
it is shown converted (`u = s/β = 0.5, s = 10` at β = 20) and plotted on the u axis; a raw threshold is on r's own
scale and never shares u's axis. RSD's δ is a threshold on r.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Threshold:
    value: float  # on `axis`'s scale (a score threshold converted: u = s / beta)
    axis: str  # "u" (tilted reward), "r" (GSI's raw reward), "δ" (RSD)
    configured: float  # as the config wrote it
    on: str  # "tilted" | "score" | "raw" | "delta"

    @property
    def text(self) -> str:
        """`u = 0.5`, `δ = 0.7`; a converted score threshold says so: `u = s/β = 0.5, s = 10`."""
        if self.on == "score":
            return f"u = s/β = {self.value:g}, s = {self.configured:g}"
        return f"{self.axis} = {self.value:g}"


def threshold_of(method: dict, beta: float | None = None) -> Threshold | None:
    """The accept threshold of a method config (a plain dict), None for methods without one (or GSI without its
    fallback, where the test decides nothing). `beta`: the run's, when the method config does not carry it."""
    name = method.get("name")
    if name == "rsd" and method.get("delta") is not None:
        d = float(method["delta"])
        return Threshold(d, "δ", d, "delta")
    if name != "gsi" or not method.get("fallback", True) or method.get("threshold") is None:
        return None
    t = float(method["threshold"])
    on = str(method.get("threshold_on") or "tilted")
    if on == "score":
        b = method.get("beta", beta)
        if not isinstance(b, (int, float)) or b <= 0:
            raise ValueError(f"a score threshold ({t:g}) needs beta > 0 to be put on the u scale, got {b!r}")
        return Threshold(t / float(b), "u", t, "score")
    if on == "raw":
        return Threshold(t, "r", t, "raw")
    return Threshold(t, "u", t, "tilted")
