"""Running rnndsl's work on more than one process or machine, on Dask distributed.

cluster.py: how the user asked to place work (`--workers N`: a LocalCluster started
here, sized to the cores; `--scheduler ADDR`: a cluster joined; neither: this process)
-> a checked `Placement`, and a client on it. tasks.py: independent tasks (a function
and its settings, such as one point of `rnndsl sweep`, which is one `rnndsl train`) ->
their outcomes as they finish. data_parallel.py: one training run whose every step's
rows are split across the workers (`rnndsl train --workers N`), gradients all-reduced
among them -> the same run as in one process, checkpoints written here.

This layer sits beside train/ and below the command line: the function a task runs is
handed to it, never imported from cli/. Dask is an optional extra
(`pip install 'rnndsl[distributed]'`), imported only when a cluster is asked for.
"""

from .cluster import ClusterError, Placement, place  # noqa: F401
from .tasks import Outcome, Task, run_task, runner  # noqa: F401
