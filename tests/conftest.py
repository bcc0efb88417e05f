"""Settings for the whole suite, made before any test imports matplotlib or the script."""

import os

# The suite never opens a window that waits for a person, display or not: pyplot (here and in
# every process a test starts) uses the non-interactive Agg backend, unless a test asks for another.
os.environ["MPLBACKEND"] = "Agg"
