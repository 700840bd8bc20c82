"""Multi-device validation: launch ranks, split the batch plan, gather statistics, survive failures.

The only place in detval that knows about ranks and torch.distributed. The engine sees a
`DistContext`, "my batches" (`iter_batches`) and "give these stats to rank 0" (`gather_ragged`).
"""
from detval.dist.context import (
    DistContext, PeerFailure, barrier, from_torchrun_env, publish_failure, raise_if_peer_failed, shutdown,
    single_process_context, torchrun_env_present,
)
from detval.dist.gather import gather_objects, gather_ragged, sort_by_image
from detval.dist.launch import LaunchError, RankFailure, launch, run_under_torchrun
from detval.dist.schedule import DynamicScheduler, ProgressCounter, iter_batches, static_split

__all__ = [
    "DistContext", "DynamicScheduler", "LaunchError", "PeerFailure", "ProgressCounter", "RankFailure", "barrier",
    "from_torchrun_env", "gather_objects", "gather_ragged", "iter_batches", "launch", "publish_failure",
    "raise_if_peer_failed", "run_under_torchrun", "shutdown", "single_process_context", "sort_by_image",
    "static_split", "torchrun_env_present",
]
