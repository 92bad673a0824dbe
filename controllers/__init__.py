"""Control laws as pure math over a ``RobotModel`` (MuJoCo kinematics and dynamics of an MJCF arm).

- ``controllers.robot_model``: ``RobotModel``, site pose, Jacobian, mass matrix and bias forces.
- ``controllers.cartesian_impedance``: SERL-style Cartesian impedance with reference limiting.
- ``controllers.limits``: error clip, clamp, rate limit and filter gain shared by every law.

Modules are imported explicitly (``from controllers.cartesian_impedance import ...``) so that importing the
package stays free of MuJoCo.
"""
