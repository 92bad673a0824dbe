"""The robot server of ``robot serve``: control loop + arm backend in one process, behind a small API.

- ``config``: the robot config file (JSON/TOML), validated.
- ``loop``: the 1 kHz loop thread with live lateness statistics (``RateLoop`` in chunks).
- ``twin``: the MuJoCo twin backend (sim task, same torque callback as the real arm).
- ``franka_backend``: the Franka + Robotiq + OpenCV cameras backend.
- ``server``: ``RobotServer``, the authenticated, versioned TCP API (client: ``hardware.server``).
"""
