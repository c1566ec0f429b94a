"""The command line's defaults are the operator settings' defaults: one definition."""

from __future__ import annotations

from ftso import cli
from ftso.settings import OperatorSettings


def test_run_flags_default_to_the_operator_settings() -> None:
    args = cli.build_parser().parse_args(["run"])
    assert (args.workers, args.resync_seconds, args.max_lost_node_share) == (
        OperatorSettings.workers,
        OperatorSettings.resync_seconds,
        OperatorSettings.max_lost_node_share,
    )
    assert (args.liveness, args.leader_election_name, args.lease_seconds) == (
        OperatorSettings.liveness_endpoint,
        OperatorSettings.leader_election_name,
        OperatorSettings.lease_seconds,
    )
