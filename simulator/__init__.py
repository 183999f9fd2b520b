"""A Microsoft Graph + Entra token endpoint look-alike over HTTPS, for tests, benchmarks and the demo."""

from simulator.server import Simulator, SimulatorInfo, run_simulator

__all__ = ["Simulator", "SimulatorInfo", "run_simulator"]
