"""How the work of a run was shared between ranks: per-rank load, aggregate throughput, scaling.

Pure: rank 0 passes in what every rank measured (gathered with `gather_objects`) and prints the
lines or stores `RunScaling.to_json()` as results.json's "distributed" entry.

Without a measured one-process baseline, a run can only judge how well its ranks were kept busy
(`busy_share`); how much faster it was than one process needs that baseline (`efficiency`, from
benchmarks/scaling.py or a caller that ran one process first). On a CPU the two differ most:
ranks share the cores, so each rank is slower than one process alone.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass


@dataclass(frozen=True)
class RankLoad:
    """What one rank did: images and whole batches it ran, and busy_s, the seconds from the start of the
    batch phase until its last batch was done (data loading, model, NMS and matching; not start-up, not gather)."""

    rank: int
    images: int
    batches: int
    busy_s: float

    @property
    def images_per_s(self) -> float:
        return self.images / self.busy_s if self.busy_s > 0 else 0.0


@dataclass(frozen=True)
class RunScaling:
    """The run as a whole.

    wall_s: seconds from the start of the batch phase until rank 0 holds every rank's statistics.
    images_per_s: all images / wall_s. busy_share: sum of busy_s / (ranks x wall_s), 1.0 when no rank
    ever waited (for the schedule's last batches or the gather). baseline_images_per_s: one process's
    throughput, when measured; then speedup = images_per_s / baseline and efficiency = speedup / ranks.
    """

    ranks: list[RankLoad]
    wall_s: float
    images_per_s: float
    busy_share: float
    baseline_images_per_s: float | None = None
    speedup: float | None = None
    efficiency: float | None = None

    @property
    def world_size(self) -> int:
        return len(self.ranks)

    def to_json(self) -> dict:
        """Plain dict for results.json "distributed" (per-rank images/s included)."""
        data = asdict(self)
        data["world_size"] = self.world_size
        for row, load in zip(data["ranks"], self.ranks):
            row["images_per_s"] = load.images_per_s
        return data


def rank_loads(per_rank: list[tuple[int, int, float]]) -> list[RankLoad]:
    """[(images, batches, busy_s)] indexed by rank (as `gather_objects` returns them) -> RankLoad rows."""
    return [RankLoad(rank, int(images), int(batches), float(busy_s))
            for rank, (images, batches, busy_s) in enumerate(per_rank)]


def run_scaling(loads: list[RankLoad], wall_s: float, baseline_images_per_s: float | None = None) -> RunScaling:
    """Aggregate the ranks' loads over a batch phase that took wall_s seconds on rank 0.

    Raises ValueError without ranks or with wall_s <= 0 (a throughput needs a duration).
    """
    if not loads:
        raise ValueError("no ranks")
    if wall_s <= 0:
        raise ValueError(f"wall_s must be positive, got {wall_s}")
    images = sum(load.images for load in loads)
    ips = images / wall_s
    busy_share = sum(load.busy_s for load in loads) / (len(loads) * wall_s)
    speedup = efficiency = None
    if baseline_images_per_s:
        speedup = ips / baseline_images_per_s
        efficiency = speedup / len(loads)
    return RunScaling(list(loads), wall_s, ips, busy_share, baseline_images_per_s, speedup, efficiency)


def summary_lines(s: RunScaling) -> list[str]:
    """The per-rank table and one aggregate line, printed by rank 0 after the metrics.

        Rank     Images    Batches     Busy s   Images/s
           0         48          3       1.52       31.6
           ...
        all 128 images on 3 ranks in 1.60 s: 80.0 images/s, ranks busy 97% of the time
    and, with a baseline, at the end of that line: " (2.71x one process, 90% efficiency)".
    """
    rows = [("%8s" + "%11s" * 4) % ("Rank", "Images", "Batches", "Busy s", "Images/s")]
    rows += [("%8i" + "%11i" * 2 + "%11.2f" + "%11.1f") % (r.rank, r.images, r.batches, r.busy_s, r.images_per_s)
             for r in s.ranks]
    images = sum(r.images for r in s.ranks)
    line = (f"all {images} images on {s.world_size} ranks in {s.wall_s:.2f} s: {s.images_per_s:.1f} images/s, "
            f"ranks busy {s.busy_share:.0%} of the time")
    if s.speedup is not None:
        line += f" ({s.speedup:.2f}x one process, {s.efficiency:.0%} efficiency)"
    return rows + [line]
