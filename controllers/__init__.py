"""Control laws as pure math over a ``RobotModel`` (MuJoCo kinematics and dynamics of an MJCF arm).

Laws (one class each, the same class for the simulated and the real arm):
- ``controllers.cartesian_impedance``: SERL-style Cartesian impedance with reference limiting.
- ``controllers.operational_space``: task-inertia weighted Cartesian PD (Khatib), singular-value guard.
- ``controllers.joint_impedance``: a spring and damper per joint.

Shared pieces:
- ``controllers.robot_model``: ``RobotModel``, site pose, Jacobian, mass matrix and bias forces.
- ``controllers.base``: ``ControllerConfig`` (limits shared by every law), ``ControllerStatus`` (what the
  safety chain did) and the tick with its safety chain (NaN guard, watchdog, joint-limit push,
  torque-rate limit, clamp).
- ``controllers.cartesian``: tool-pose targets, workspace box, null-space posture, J^T assembly.
- ``controllers.reference``: target and gain filters, hemisphere-safe pose error.
- ``controllers.task_space``: Jacobian, twist, task inertia with its guard, null-space projector.
- ``controllers.limits``: clip, clamp, rate limit, joint-limit push, filter gain.
- ``controllers.rate_loop``: ``RateLoop``, a fixed-rate runner with lateness statistics.
- ``controllers.evaluation``: step and tracking measures, circle paths, IK (tests and benchmarks).

Quaternions are (w, x, y, z) everywhere, as MuJoCo stores them. Modules are imported explicitly
(``from controllers.cartesian_impedance import ...``) so that importing the package stays free of MuJoCo.
"""
