"""What every workload's figures share: one look per series that survives greyscale print."""
from __future__ import annotations

# (marker, line style) per series: seven markers, then the next line style (28 distinct series)
STYLES = [(m, ls) for ls in ("-", "--", "-.", ":") for m in ("o", "s", "^", "D", "v", "P", "X")]
# bar fills told apart without colour
HATCHES = ("", "//", "..", "xx", "\\\\", "++", "oo", "--")
