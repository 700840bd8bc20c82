"""Multi-device validation: launch ranks, split the batch plan, gather statistics, survive failures.

The only place in detval that knows about ranks and torch.distributed. The engine sees a
`DistContext`, "my batches" (`iter_batches`) and "give these stats to rank 0" (`gather_ragged`).
"""
from detval.dist.context import (
    DistContext, PeerFailure, barrier, from_torchrun_env, publish_failure, raise_if_peer_failed, shutdown,
    single_process_context, torchrun_env_present,
)
from detval.dist.gather import check_same, exchange_ragged, gather_objects, gather_ragged, sort_by_image
from detval.dist.launch import LaunchError, RankFailure, launch, run_under_torchrun
from detval.dist.schedule import DynamicScheduler, ProgressCounter, dynamic_split, iter_batches, static_split
from detval.dist.summary import RankLoad, RunScaling, rank_loads, run_scaling, summary_lines

__all__ = [
    "DistContext", "DynamicScheduler", "LaunchError", "PeerFailure", "ProgressCounter", "RankFailure", "RankLoad",
    "RunScaling", "barrier", "check_same", "dynamic_split", "exchange_ragged", "from_torchrun_env", "gather_objects", "gather_ragged",
    "iter_batches", "launch", "publish_failure", "raise_if_peer_failed", "rank_loads", "run_scaling",
    "run_under_torchrun", "shutdown", "single_process_context", "sort_by_image", "static_split", "summary_lines",
    "torchrun_env_present",
]
