"""What the tool does with a model: inspect, plan and apply changes, compare."""

from collections.abc import Callable

# Told (phase, done, total) as work goes along: "reading" per weight for inspect, "predicting"
# or "writing" per weight and then "verifying" for a write. For a progress display: it must
# not raise, and it is never needed.
Progress = Callable[[str, int, int], None]
