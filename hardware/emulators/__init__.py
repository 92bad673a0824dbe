"""Device emulators that speak the real wire protocols, served over a pty or TCP socket.

Tests and dry runs point the real drivers at `EmulatorServer(...).url`; nothing is mocked.
"""

from hardware.emulators.server import EmulatorServer, Fault, FaultConfig, Transport

__all__ = ["EmulatorServer", "Fault", "FaultConfig", "Transport"]
