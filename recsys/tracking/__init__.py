"""MLflow integration: where runs go (store), what each run holds (runs), the servable top-k model
(pyfunc), champion/challenger promotion (registry), and cross-run comparison (compare).

Submodules import MLflow lazily where they can; import them directly, e.g.
`from recsys.tracking.runs import Tracker, make_tracker`.
"""

from recsys.tracking.store import (
    DEFAULT_TRACKING_URI,
    check_tracking,
    metric_key,
    metric_name,
    resolve_tracking_uri,
)

__all__ = ["DEFAULT_TRACKING_URI", "check_tracking", "metric_key", "metric_name", "resolve_tracking_uri"]
