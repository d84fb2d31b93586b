"""tagger: a batch genre tagger for music libraries."""
import os as _os

# numba's host-CPU code generation segfaults on this machine kind inside
# librosa's tuning estimation (see shared MEASUREMENTS.md); generic code runs.
# It must be set before numba is first imported, hence here.
_os.environ.setdefault("NUMBA_CPU_NAME", "generic")
# TensorFlow's start-up chatter is noise on a command line.
_os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

__version__ = "0.1.0"
