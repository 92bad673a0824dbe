"""Drivers that speak real wire protocols, and emulators that speak them back.

- `hardware.dynamixel`: Dynamixel Protocol 2.0 servo bus (X-series tables, current control, watchdog).
- `hardware.feetech`: Feetech STS/SCS servo bus (sign-magnitude values, byte order per series).
- `hardware.robotiq`: Robotiq 2F grippers over Modbus RTU (own framing, keep-alive).
- `hardware.motor_bus`: what the servo buses share (calibration, normalisation, retries, goal caps).
- `hardware.emulators`: the same devices behind a pseudo-terminal or TCP socket, with fault injection.
- `hardware.cameras`: OpenCV cameras (and video files) read by a thread: newest frame with its
  timestamp, settings read back, maximum frame age, reconnect with backoff.
- `hardware.teleop`: keyboard (terminal, no dependency) and SpaceMouse (`robot-stack[hardware]`) teleop,
  one `TeleopCommand` type with SERL's intervention rule.
- `hardware.optional`: the guard that names the pip extra when an optional dependency is missing.
- `hardware.errors`: typed errors whose messages say how to fix them.

Every driver opens its port with `serial.serial_for_url`, so pointing it at an emulator or at real
hardware is a change of the `port` string only.
"""
