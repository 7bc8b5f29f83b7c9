"""`python -m tools.chaos`: the chaos run (`make chaos`) and the backlog run (`make backlog`).

    python -m tools.chaos run [--crm sandbox|zendesk|both] [--profile full|short] [--seed N] [--layout all|split]
    python -m tools.chaos backlog [--events 1000000] [--drain-minutes 10]

The seed is printed at the start; pass it again to replay the same traffic and fault plan.
Exit status 0 when every column is zero and the run finished, 1 otherwise.
"""

from __future__ import annotations

import argparse
import logging
import os
import secrets
import sys


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.chaos")
    commands = parser.add_subparsers(dest="command", required=True)
    chaos = commands.add_parser("run", help="the fault-injection run, judged by the policy")
    chaos.add_argument("--crm", choices=["sandbox", "zendesk", "both"], default="both")
    chaos.add_argument("--profile", choices=["full", "short"], default="full")
    chaos.add_argument("--seed", type=int, default=None, help="replay a run (default: CHAOS_SEED or a new one)")
    chaos.add_argument("--keep-logs", action="store_true")
    chaos.add_argument("--layout", choices=["all", "split"], default="all",
                       help="split: each replica is a consumer process and a worker process (SERVICE_ROLE)")
    backlog = commands.add_parser("backlog", help="1,000,000 events published while the service is stopped")
    backlog.add_argument("--events", type=int, default=1_000_000)
    backlog.add_argument("--drain-minutes", type=float, default=10.0,
                         help="how long to follow the outbox after every event is applied")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for noisy in ("aiokafka", "httpx"):
        logging.getLogger(noisy).setLevel(logging.WARNING)

    if args.command == "backlog":
        from tools.chaos.backlog import run_backlog

        return run_backlog(args.events, args.drain_minutes)

    import dataclasses

    from tools.chaos.run import PROFILES, run

    seed = args.seed if args.seed is not None else int(os.environ.get("CHAOS_SEED") or secrets.randbelow(10**6))
    print(f"chaos seed: {seed} (replay: make chaos CHAOS_SEED={seed})", flush=True)
    crms = ["sandbox", "zendesk"] if args.crm == "both" else [args.crm]
    profile = PROFILES[args.profile]
    if args.layout == "split":
        profile = dataclasses.replace(profile, roles=("consumer", "worker"))
    outcomes = run(crms, seed, profile, keep_logs=args.keep_logs)
    for outcome in outcomes:
        print(f"{outcome.crm}: {'PASS' if outcome.passed else 'FAIL'}", flush=True)
    return 0 if all(o.passed for o in outcomes) else 1


if __name__ == "__main__":
    sys.exit(main())
