"""`python -m simulator --state-dir DIR [--port 0] [--tenants 1] [--users 200] [--seed 1]`."""

from __future__ import annotations

import argparse
import asyncio
from pathlib import Path

from simulator.server import run_simulator


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m simulator", description="Run the Graph simulator.")
    parser.add_argument("--state-dir", type=Path, required=True, help="where simulator.json and the CA go")
    parser.add_argument("--port", type=int, default=0, help="HTTPS port (0: any free port)")
    parser.add_argument("--tenants", type=int, default=1, help="simulated tenants")
    parser.add_argument("--users", type=int, default=200, help="users seeded per tenant")
    parser.add_argument("--seed", type=int, default=1, help="seed of the generated directory")
    args = parser.parse_args(argv)
    asyncio.run(run_simulator(state_dir=args.state_dir, port=args.port, tenants=args.tenants, users=args.users,
                              seed=args.seed))  # fmt: skip


if __name__ == "__main__":
    main()
