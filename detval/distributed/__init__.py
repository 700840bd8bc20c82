"""Multi-device validation: launch ranks, split the batch plan, gather statistics, survive failures.

The only place in detval that knows about ranks and imports torch.distributed. The run sees a `DistContext`,
"my batches" (`iter_batches`) and the evaluators a `Comm` ("give these per-image tables to rank 0").
"""
from detval.distributed.context import (
    DistContext, PeerFailure, barrier, from_torchrun_env, publish_failure, raise_if_peer_failed, shutdown,
    single_process_context, torchrun_env_present,
)
from detval.distributed.comm import Comm, Tables
from detval.distributed.gather import check_same, exchange_ragged, gather_objects, gather_ragged, sort_by_image
from detval.distributed.launch import LaunchError, RankFailure, launch, run_under_torchrun
from detval.distributed.schedule import DynamicScheduler, ProgressCounter, dynamic_split, iter_batches, static_split
from detval.distributed.summary import RankLoad, RunScaling, rank_loads, run_scaling, summary_lines

__all__ = [
    "Comm", "DistContext", "DynamicScheduler", "LaunchError", "PeerFailure", "ProgressCounter", "RankFailure", "RankLoad",
    "RunScaling", "barrier", "check_same", "dynamic_split", "exchange_ragged", "from_torchrun_env", "gather_objects", "gather_ragged",
    "iter_batches", "launch", "publish_failure", "raise_if_peer_failed", "rank_loads", "run_scaling",
    "run_under_torchrun", "shutdown", "single_process_context", "sort_by_image", "static_split", "summary_lines",
    "Tables", "torchrun_env_present",
]
