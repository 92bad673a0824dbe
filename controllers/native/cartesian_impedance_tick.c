/* The Cartesian impedance tick of controllers.cartesian_impedance, compiled, for simulation.
 *
 * Why: in MuJoCo the controller runs every physics step; the Python tick costs about twice an mj_step,
 * so a simulated env step spent two thirds of its time in the controller. This file runs
 * n x (mj_step1 -> tick -> mj_step2) in C on the *same state arrays* the Python controller owns (every
 * pointer below is a NumPy buffer of the Python objects), so the Python class stays the one controller:
 * the real arm runs its Python tick, simulation runs this translation of it, and tests compare the two.
 *
 * It covers the configuration envs use: bias compensation on or off, target filter, torque-rate limit,
 * torque clamp, null-space posture with the dynamically consistent projector, NaN guard. Anything else
 * (integral action, joint-limit push, a moving gain filter, a watchdog trip, the singular-value guard
 * engaging) returns control to Python at that tick: rs_run stops right after mj_step1 of the substep it
 * cannot handle, leaving every state array as it was before that tick, and returns the number of
 * substeps it completed. Python then runs its own tick, mj_step2, and calls rs_run for the rest.
 *
 * Operation order mirrors the Python modules line by line (reference.py, task_space.py, cartesian.py,
 * cartesian_impedance.py, base.py, limits.py); MuJoCo's mju_* routines are the same ones Python calls.
 */
#include <math.h>
#include <string.h>

#include <mujoco/mujoco.h>

#define RS_SETTLED 1e-12   /* reference.py _SETTLED */
#define RS_REFRESH_MARGIN 4.0
#define RS_REFRESH_TICKS 8
#define RS_MAX_NV 64

typedef struct {
  /* sizes and addresses */
  int nv, n, dof_start, qpos_start, site_id, ctrl_start;
  int compensate_bias, posture_enabled;
  double dt, max_tau_step, inertia_floor, posture_k, posture_d, watchdog_deadline;
  /* pose reference (reference.py PoseReference) */
  double *target_pos, *target_quat, *ref_pos, *ref_quat, *offset; /* offset: [pos 3; rot 3] */
  double *state;      /* [clipped error 6; twist 6] */
  double *gain;       /* 6 x 12: [-K, -D] */
  double *err_low, *err_high, *wrench;
  /* task space (task_space.py) */
  double *jac_full, *jac_minv, *inertia_inv, *factor, *probe, *solved;
  /* posture (task_space.py NullSpacePosture) */
  double *posture_offset, *posture_tau_full;
  /* torques (base.py): command buffer, previous command, limits (arm length n) */
  double *tau_full, *tau_full_prev, *tau_low, *tau_high;
  /* scalars that Python reads back after the call */
  double pose_decay, pose_beta, min_eigenvalue, last_target_s;
  long ticks, ticks_to_refresh, nan_ticks;
  int stamp_pending, watchdog_engaged, nan_hold, rate_limited, clamped;
  /* optional contact-force monitor after every physics step (envs' peak-force tracking): a 3-vector of
     sensordata, low-pass filtered with gain alpha (force on the body = -sensor), per-axis peak of |force| */
  int monitor_sensor_adr; /* -1: no monitor */
  double monitor_alpha;
  double *monitor_force, *monitor_peak;
} rs_cimp;

/* envs/panda_peg_insert.py _track_force, same operation order. */
static void monitor_force(rs_cimp* c, const mjData* d) {
  const double* sensor = d->sensordata + c->monitor_sensor_adr;
  for (int i = 0; i < 3; i++) {
    double f = c->monitor_force[i] * (1.0 - c->monitor_alpha);
    f += sensor[i] * -c->monitor_alpha;
    c->monitor_force[i] = f;
    double a = fabs(f);
    if (c->monitor_peak[i] < a) c->monitor_peak[i] = a;
  }
}

static int all_finite(const double* v, int n) {
  double s = 0.0;
  for (int i = 0; i < n; i++) s += v[i] * v[i];
  return isfinite(s);
}

/* _repeat_last_command: the previous command again, counted as a NaN hold. */
static void repeat_last(rs_cimp* c) {
  c->nan_hold = 1;
  c->nan_ticks += 1;
  c->rate_limited = c->clamped = 0;
  /* the previous command stays the previous command (Python swaps two equal buffers) */
  memcpy(c->tau_full + c->dof_start, c->tau_full_prev + c->dof_start, sizeof(double) * c->n);
}

/* GuardedSpdInverse.factor without its guarded path; returns 1 when the guard would be needed. */
static int factor_inertia(rs_cimp* c) {
  memcpy(c->factor, c->inertia_inv, sizeof(double) * 36);
  int rank = mju_cholFactor(c->factor, 6, c->inertia_floor);
  if (rank != 6) return 1;
  c->ticks_to_refresh -= 1;
  if (c->ticks_to_refresh <= 0 || c->min_eigenvalue < RS_REFRESH_MARGIN * c->inertia_floor) {
    mju_cholSolve(c->solved, c->factor, c->probe, 6);
    double inv_norm = 1.0 / sqrt(mju_dot(c->solved, c->solved, 6));
    c->min_eigenvalue = inv_norm;
    mju_scl(c->probe, c->solved, inv_norm, 6);
    c->ticks_to_refresh = RS_REFRESH_TICKS;
  }
  return c->min_eigenvalue >= c->inertia_floor ? 0 : 1;
}

/* One tick after mj_step1. Returns 0 done (torque in ctrl), 1 hand this tick to Python (state untouched). */
static int tick(rs_cimp* c, const mjModel* m, mjData* d) {
  const int n = c->n, nv = c->nv, ds = c->dof_start;
  const double* q = d->qpos + c->qpos_start;
  const double* dq = d->qvel + ds;
  double now = (double)(c->ticks + 1) * c->dt;

  if (all_finite(q, n) && all_finite(dq, n)) {
    if (!c->stamp_pending && !c->watchdog_engaged && now - c->last_target_s >= c->watchdog_deadline)
      return 1; /* the watchdog trips: Python holds the pose */
    if (c->watchdog_engaged) return 1;
  }
  /* Kinematic quantities and the guard decision first: they depend on the state only, so a hand-over
     to Python leaves the controller exactly as it was (the probe state is restored). */
  double probe_saved[6], min_eig_saved = c->min_eigenvalue;
  long refresh_saved = c->ticks_to_refresh;
  if (c->posture_enabled && all_finite(q, n) && all_finite(dq, n)) {
    mj_jacSite(m, d, c->jac_full, c->jac_full + 3 * nv, c->site_id);
    memcpy(probe_saved, c->probe, sizeof probe_saved);
    mj_solveM(m, d, c->jac_minv, c->jac_full, 6);
    mju_mulMatMatT(c->inertia_inv, c->jac_minv, c->jac_full, 6, nv, 6);
    if (factor_inertia(c)) {
      memcpy(c->probe, probe_saved, sizeof probe_saved);
      c->min_eigenvalue = min_eig_saved;
      c->ticks_to_refresh = refresh_saved;
      return 1;
    }
  }

  /* base.py compute */
  c->ticks += 1;
  if (!(all_finite(q, n) && all_finite(dq, n))) {
    repeat_last(c);
    goto out;
  }
  if (c->stamp_pending) {
    c->last_target_s = now;
    c->stamp_pending = 0;
  }

  /* cartesian.py _clipped_error: filter, error, clip */
  double* e = c->state;
  double* twist = c->state + 6;
  if (c->pose_decay != 0.0) {
    double decay = c->pose_decay * c->pose_beta;
    if (decay < RS_SETTLED) decay = 0.0;
    c->pose_decay = decay;
    for (int i = 0; i < 3; i++) c->ref_pos[i] = c->offset[i] * decay + c->target_pos[i];
    memcpy(c->ref_quat, c->target_quat, sizeof(double) * 4);
    if (decay != 0.0) mju_quatIntegrate(c->ref_quat, c->offset + 3, decay);
  }
  const double* site_pos = d->site_xpos + 3 * c->site_id;
  const double* site_mat = d->site_xmat + 9 * c->site_id;
  for (int i = 0; i < 3; i++) e[i] = site_pos[i] - c->ref_pos[i];
  double quat[4], vec3[3];
  mju_mat2Quat(quat, site_mat);
  mju_subQuat(vec3, quat, c->ref_quat);
  mju_rotVecQuat(e + 3, vec3, c->ref_quat);
  for (int i = 0; i < 6; i++) {
    if (e[i] > c->err_high[i]) e[i] = c->err_high[i];
    if (e[i] < c->err_low[i]) e[i] = c->err_low[i];
  }

  /* task_space.py TaskSpace.update: Jacobian (already current with a posture) and twist */
  if (!c->posture_enabled) mj_jacSite(m, d, c->jac_full, c->jac_full + 3 * nv, c->site_id);
  mju_mulMatVec(twist, c->jac_full, d->qvel, 6, nv);

  /* cartesian.py _spring_damper: wrench = [-K, -D] [e; twist] */
  mju_mulMatVec(c->wrench, c->gain, c->state, 6, 12);

  /* cartesian.py _apply_wrench / task_space.py torque */
  double* tau_full = c->tau_full;
  if (c->posture_enabled) {
    double* tau0 = c->posture_tau_full + ds;
    for (int i = 0; i < n; i++) tau0[i] = c->posture_offset[i] - q[i] * c->posture_k;
    for (int i = 0; i < n; i++) tau0[i] += dq[i] * -c->posture_d;
    double v6[6], v6b[6];
    mju_mulMatVec(v6, c->jac_minv, c->posture_tau_full, 6, nv);
    mju_cholSolve(v6b, c->factor, v6, 6);
    for (int i = 0; i < 6; i++) c->wrench[i] -= v6b[i];
  }
  mju_mulMatTVec(tau_full, c->jac_full, c->wrench, 6, nv);
  if (c->posture_enabled)
    for (int i = 0; i < nv; i++) tau_full[i] += c->posture_tau_full[i];

  /* base.py: bias, NaN guard, torque-rate limit, clamp */
  double* tau = tau_full + ds;
  double* prev = c->tau_full_prev + ds;
  if (c->compensate_bias) {
    const double* bias = d->qfrc_bias + ds;
    for (int i = 0; i < n; i++) tau[i] += bias[i];
  }
  if (!all_finite(tau, n)) {
    repeat_last(c);
    goto out;
  }
  c->nan_hold = 0;
  {
    double change[RS_MAX_NV], allowed[RS_MAX_NV], over = 0.0;
    for (int i = 0; i < n; i++) {
      change[i] = tau[i] - prev[i];
      double a = change[i] < c->max_tau_step ? change[i] : c->max_tau_step;
      allowed[i] = a > -c->max_tau_step ? a : -c->max_tau_step;
      change[i] -= allowed[i];
      over += change[i] * change[i];
    }
    c->rate_limited = over > 0.0;
    if (c->rate_limited)
      for (int i = 0; i < n; i++) tau[i] = prev[i] + allowed[i];
    over = 0.0;
    for (int i = 0; i < n; i++) {
      double a = tau[i] < c->tau_high[i] ? tau[i] : c->tau_high[i];
      allowed[i] = a > c->tau_low[i] ? a : c->tau_low[i];
      change[i] = tau[i] - allowed[i];
      over += change[i] * change[i];
    }
    c->clamped = over > 0.0;
    if (c->clamped) memcpy(tau, allowed, sizeof(double) * n);
  }
out:
  /* This command becomes the rate limiter's base (Python swaps its two buffers). */
  memcpy(c->tau_full_prev + ds, c->tau_full + ds, sizeof(double) * n);
  memcpy(d->ctrl + c->ctrl_start, c->tau_full + ds, sizeof(double) * n);
  return 0;
}

/* n_substeps x (mj_step1 -> tick -> mj_step2). Returns the substeps completed; when it returns k < n the
   model is after mj_step1 of substep k and Python runs that tick. */
int rs_run(rs_cimp* c, const mjModel* m, mjData* d, int n_substeps) {
  if (c->nv > RS_MAX_NV || c->n > RS_MAX_NV) return 0;
  for (int k = 0; k < n_substeps; k++) {
    mj_step1(m, d);
    if (tick(c, m, d)) return k;
    mj_step2(m, d);
    if (c->monitor_sensor_adr >= 0) monitor_force(c, d);
  }
  return n_substeps;
}

int rs_struct_size(void) { return (int)sizeof(rs_cimp); }
