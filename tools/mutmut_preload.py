"""A pytest plugin for `make mutation` only (``-p tools.mutmut_preload`` in [tool.mutmut]).

mutmut's fork server collects the selected tests once and forks one worker per mutant from it.
Loading TensorFlow and Keras here, at collection, means every worker starts with them imported
(seconds less per mutant that reaches lib.explain.scores) while the server itself never runs a
TensorFlow op, which would not survive the fork.
"""

import keras  # noqa: F401
import tensorflow  # noqa: F401
