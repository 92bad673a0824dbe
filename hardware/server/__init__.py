"""Client side of the robot server API: the wire format (``protocol``) and ``RobotClient``.

The server itself (control loop, arm backends, twin) is ``robot.server``; the client lives here so that
``envs.real`` can use it without importing ``robot``.
"""
