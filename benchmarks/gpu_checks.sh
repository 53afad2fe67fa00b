#!/usr/bin/env bash
# The checks that need a CUDA GPU, cheapest first; each prints its numbers (README, hardware table).
#
#   bash benchmarks/gpu_checks.sh runs/gpu_checks            # all
#   bash benchmarks/gpu_checks.sh runs/gpu_checks tests sam  # some: tests | sam | smoke | zero3_3b | lora_3b | 24gb | speed
#
# tests:    tests/test_gpu.py (bf16 SAM2 vs fp32; the toy recipe under DeepSpeed ZeRO-3, tiny models)
# sam:      SAM2 hiera-large architecture: encode reuse, bf16 vs fp32 time and masks
# smoke:    one two-stage GRPO step, Qwen2.5-VL-3B + SAM2 hiera-large architectures, bf16, HF generation
# zero3_3b: the reference recipe (socioreasoner_3b_4gpu_zero3.yaml) for one step under ZeRO-3 on the
#           visible GPUs, HF generation instead of vLLM, short completions, random 3B weights
# lora_3b:  the one-GPU recipe (socioreasoner_3b_1gpu_lora.yaml) for one step: LoRA, gradient checkpointing,
#           KL to the adapter-free model; HF generation instead of vLLM, short completions, random 3B weights
# 24gb:     the 24 GB recipe (socioreasoner_3b_24gb_lora.yaml) for 3 steps with the process capped at 24 GiB
#           (benchmarks/capped_train.py), vLLM colocate where vLLM is installed (else HF generation), random 3B
#           weights; prints the peak (max_memory_allocated and nvidia-smi), the step time, and the memory plan's
#           prediction for the same settings beside it
# speed:    inference (Predictor.predict, both stages) per sample at batch 1 / 8 / 16, 256 tokens per stage
set -uo pipefail
out=${1:-runs/gpu_checks}
shift || true
checks=${*:-tests sam smoke zero3_3b lora_3b 24gb speed}
mkdir -p "$out"
export HF_HUB_OFFLINE=1 HF_HUB_DISABLE_TELEMETRY=1 TOKENIZERS_PARALLELISM=false PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
python - <<'PY'
import importlib
for name in ["torch", "transformers", "trl", "accelerate", "peft", "datasets", "deepspeed", "vllm"]:
    try:
        print(f"{name} {importlib.import_module(name).__version__}")
    except ImportError:
        print(f"{name} not installed")
PY
smoke_dir=${SMOKE_DIR:-/tmp/gpu_smoke}
# the random-weight 3B + SAM2 hiera-large the training and speed checks share, built once
build_3b() { [ -d "$smoke_dir/qwen2_5_vl_3b" ] || python benchmarks/gpu_smoke.py --out "$smoke_dir" --build-only; }
# the first logged step of a run: losses, rewards, KL, step time
first_log() { python -c "import json,sys; print(sys.argv[1], 'log:', json.load(open(sys.argv[2]))['log_history'][0])" "$1" "$2"; }
for check in $checks; do
  echo "=== $check"
  start=$(date +%s)
  case $check in
    tests) python -m pytest tests/test_gpu.py -v -rs -p no:cacheprovider 2>&1 | tee "$out/tests.log" ;;
    sam) python benchmarks/sam_encode_reuse.py --device cuda --compare-fp32 2>&1 | tee "$out/sam.log" ;;
    smoke) python benchmarks/gpu_smoke.py --out "$smoke_dir" --gradient-checkpointing 2>&1 | tee "$out/smoke.log" ;;
    zero3_3b)
      build_3b
      accelerate launch --config_file recipes/accelerate/zero3.yaml --num_processes "$(nvidia-smi -L | wc -l)" \
        recipes/train.py --config recipes/socioreasoner_3b_4gpu_zero3.yaml \
        --model_name_or_path "$smoke_dir/qwen2_5_vl_3b" --sam_model "$smoke_dir/sam2_hiera_large" \
        --dataset "$smoke_dir/toy768" --output_dir "$smoke_dir/zero3_run" --attn_implementation sdpa \
        --use_vllm false --max_steps 1 --per_device_train_batch_size 8 --gradient_accumulation_steps 1 --steps_per_generation 1 \
        --max_completion_length 128 --save_strategy no --report_to none 2>&1 | tee "$out/zero3_3b.log" | tail -40
      first_log zero3_3b "$smoke_dir/zero3_run/trainer_state.json" ;;
    lora_3b)
      build_3b
      nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits -lms 500 > "$out/lora_3b.mem" &
      sampler=$!
      accelerate launch --config_file recipes/accelerate/single.yaml \
        recipes/train.py --config recipes/socioreasoner_3b_1gpu_lora.yaml \
        --model_name_or_path "$smoke_dir/qwen2_5_vl_3b" --sam_model "$smoke_dir/sam2_hiera_large" \
        --dataset "$smoke_dir/toy768" --output_dir "$smoke_dir/lora_run" \
        --use_vllm false --max_steps 1 --per_device_train_batch_size 8 --gradient_accumulation_steps 1 --steps_per_generation 1 \
        --max_completion_length 128 --save_strategy no --report_to none --log_completions false \
        2>&1 | tee "$out/lora_3b.log" | tail -40
      first_log lora_3b "$smoke_dir/lora_run/trainer_state.json"
      kill "$sampler" 2>/dev/null
      echo "lora_3b peak GPU memory (nvidia-smi, whole device): $(sort -n "$out/lora_3b.mem" | tail -1) MiB" ;;
    24gb)
      build_3b
      vllm=$(python -c "import vllm" 2>/dev/null && echo true || echo false)
      nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits -lms 500 > "$out/24gb.mem" &
      sampler=$!
      accelerate launch --config_file recipes/accelerate/single.yaml benchmarks/capped_train.py --cap-gib 24 \
        --config recipes/socioreasoner_3b_24gb_lora.yaml \
        --model_name_or_path "$smoke_dir/qwen2_5_vl_3b" --sam_model "$smoke_dir/sam2_hiera_large" \
        --dataset "$smoke_dir/toy768" --output_dir "$smoke_dir/run_24gb" --use_vllm "$vllm" --max_steps 3 \
        --save_strategy no --report_to none --log_completions false 2>&1 | tee "$out/24gb.log" | tail -40
      first_log 24gb "$smoke_dir/run_24gb/trainer_state.json"
      kill "$sampler" 2>/dev/null
      echo "24gb peak GPU memory (nvidia-smi, whole device): $(sort -n "$out/24gb.mem" | tail -1) MiB"
      python benchmarks/memory_plan.py --config recipes/socioreasoner_3b_24gb_lora.yaml --set use_vllm=$vllm | tail -4 ;;
    speed)
      build_3b
      python benchmarks/inference_speed.py --model "$smoke_dir/qwen2_5_vl_3b" --sam "$smoke_dir/sam2_hiera_large" \
        --device cuda --batch-sizes 1 8 16 --batches 1 --new-tokens 256 --out "$out/speed" 2>&1 | tee "$out/speed.log" ;;
    *) echo "unknown check: $check" ;;
  esac
  echo "=== $check: $(( $(date +%s) - start )) s"
done
