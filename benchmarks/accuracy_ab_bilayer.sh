#!/usr/bin/env bash
# HedgeNet accuracy on held-out AB bilayer graphene: label a training set and a held-out test set
# with GFN1-xTB (7×7 cells, 196 atoms, blocks within 6 Å: truncation error 0.07 meV on the bands), train
# hedgenet_small (joint task, float32) on one CPU thread, evaluate on the held-out set. The table in
# docs/results_training.md comes from <run dir>/metrics.json. Wall time here: ~12 min labelling, ~45 min training.
set -euo pipefail
cd "$(dirname "$0")/.."
export OMP_NUM_THREADS=1
PY=.venv/bin
COMMON="dataset.supercell=[7,7] reference.block_cutoff=6.0 progress=false"
# training set: 8 rattles at each of 0.02/0.05 Å + 8 thermal samples at each of 100/300/600 K (40 cells)
$PY/hedgenet-label dataset.name=ab_bilayer_7x7_b6_train $COMMON \
  dataset.rattle.n_per_amplitude=8 dataset.thermal.n_per_temperature=8 seed=1
# held-out set: other seeds, 4 + 4 rattles, 4 thermal samples per temperature (20 cells)
$PY/hedgenet-label dataset.name=ab_bilayer_7x7_b6_test $COMMON \
  dataset.rattle.n_per_amplitude=4 dataset.thermal.n_per_temperature=4 seed=2
$PY/hedgenet-train task_name=accuracy_ab_bilayer \
  "data.paths=[data/ab_bilayer_7x7_b6_train.h5]" "data.test_paths=[data/ab_bilayer_7x7_b6_test.h5]" \
  trainer.precision=32-true train.max_epochs=${EPOCHS:-50} train.scheduler.patience=4 "$@"
