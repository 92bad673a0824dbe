#!/usr/bin/env bash
# The GPU checks of issues 2 and 5 in one call on a lent GPU machine (BENCHMARKS.md has the results):
#   1. tests/policies/test_cuda_graph.py (the whole-update CUDA graph learns like the eager update) and
#      test_sac_backprop.py (the explicit update on the GPU matches autograd),
#   2. learner_throughput --device cuda (state rows eager and graphed, image rows, SB3 on the same GPU),
#   3. pick_cube_images on the GPU (pixels, 20 demos, a wall-clock cap; state peer at the same steps);
#      PICK_MINUTES=0 skips it.
# Packages the machine lacks may travel as wheels in .whl/ (python 3.12), the EGL loader as .deb files
# in .gl/ (see the device notes); results and logs go to $OUT (default runs/gpu_checks).
set -u
OUT=${OUT:-runs/gpu_checks}
mkdir -p "$OUT"
if compgen -G ".whl/*.whl" >/dev/null; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
        && export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH} || exit 1
fi
if compgen -G ".gl/*.deb" >/dev/null; then
    for f in .gl/*.deb; do dpkg -x "$f" /; done
    ldconfig
fi
vendor=/usr/local/nvidia/share/glvnd/egl_vendor.d/10_nvidia.json
[ -f "$vendor" ] && export __EGL_VENDOR_LIBRARY_FILENAMES=$vendor
export MUJOCO_GL=egl PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
python3 -c "import torch, mujoco; print('torch', torch.__version__, 'mujoco', mujoco.__version__)"

python3 -m pytest -q -p no:cacheprovider tests/policies/test_cuda_graph.py tests/policies/test_sac_backprop.py 2>&1 | tee "$OUT/tests.log" | tail -5
timeout 240 python3 -m benchmarks.learner_throughput --device cuda --image_batch 256 2>&1 | tee "$OUT/learner.log"
cp benchmarks/results/learner_throughput.json "$OUT/"
[ "${PICK_MINUTES:-2.5}" = 0 ] && exit 0
timeout 300 python3 -m benchmarks.pick_cube_images --device cuda --compile cuda-graph --steps 20000 \
    --eval_every 1000 --eval_episodes 10 --batch 256 --utd 4 --max_minutes "${PICK_MINUTES:-2.5}" \
    --peer_max_minutes 1 2>&1 | tee "$OUT/pick.log" | grep -v "^\s*$" | tail -40
cp benchmarks/results/pick_cube_images.json "$OUT/" 2>/dev/null
exit 0
