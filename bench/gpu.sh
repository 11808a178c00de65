#!/usr/bin/env bash
# The GPU figures of the README, on a machine with a CUDA GPU and PyTorch (torchvision and timm for parity):
#
#   bash bench/gpu.sh PART [DATA] [OUT]
#
# PART: parity | tta | paper | bench | experiments | campaign. DATA: CIFAR-10 as a .tar.gz image tree (default
# ../shared/data/cifar10-jpeg.tar.gz). OUT: where results go (default bench/results/gpu).
set -uo pipefail
part=${1:?usage: bash bench/gpu.sh PART [DATA] [OUT]}
data=${2:-../shared/data/cifar10-jpeg.tar.gz}
out=${3:-bench/results/gpu}
mkdir -p "$out"
export PYTHONPATH=src${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
nvidia-smi -L
python3 -c "import torch; print('torch', torch.__version__, torch.cuda.get_device_name())"
case $part in
  parity)  # the real torchvision/timm models against ours, float64
    python3 bench/parity.py --out "$out" ;;
  tta)     # cifar10-fast to 94%: eager once, then compiled over 3 seeds
    python3 bench/time_to_accuracy.py fast --device cuda --seeds 0 --data "$data" --out "$out" \
      --figure "$out/time_to_accuracy.png"
    python3 bench/time_to_accuracy.py fast --device cuda --compile --seeds 0 1 2 --data "$data" --out "$out" \
      --figure "$out/time_to_accuracy.png" ;;
  paper)   # the paper's ResNet-20 and ResNet-56 towards 91% (cifar10-quick recipe, 30 epochs)
    for model in resnet20 resnet56; do
      python3 bench/time_to_accuracy.py paper --device cuda --model $model --epochs 30 --data "$data" \
        --out "$out" --figure "$out/time_to_accuracy.png"
    done ;;
  bench)   # the speed suite on the GPU
    python3 -m resnets bench --device cuda --out "$out/bench.json" ;;
  experiments)  # degradation on all the data, 12 epochs (docs/experiments.md)
    python3 -m resnets experiment degradation --data "$data" --epochs 12 --out "$out/degradation" --no-progress ;;
  campaign)  # every unfinished run of bench/campaign.yaml at once, compiled, bf16, within BUDGET (default 8m);
             # DATA: the original CIFAR-10 python archive. The states and finished runs are copied to OUT.
    python3 bench/campaign.py run --device cuda --parallel 7 --compile --nice 0 --budget "${BUDGET:-8m}" \
      --var cifar10_lossless="$data"
    cp -r bench/campaign/state bench/results/campaign "$out"/ ;;
  *) echo "unknown part $part"; exit 2 ;;
esac
