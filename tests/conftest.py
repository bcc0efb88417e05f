"""Settings for the whole suite, made before any test imports matplotlib or the script."""

import os

# The suite never opens a window that waits for a person, display or not: pyplot (here and in
# every process a test starts) uses the non-interactive Agg backend, unless a test asks for another.
os.environ["MPLBACKEND"] = "Agg"
# The tests check the script as it runs where the user has set nothing for TensorFlow: the
# script sets these three only where they are unset (the log level's test sets its own).
for name in ("TF_CPP_MIN_LOG_LEVEL", "TF_ENABLE_ONEDNN_OPTS", "TF_NUM_INTEROP_THREADS"):
    os.environ.pop(name, None)
