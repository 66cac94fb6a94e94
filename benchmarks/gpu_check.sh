#!/usr/bin/env bash
# Everything that needs a GPU, as one command for a lent device (an H100/H200 with torch + CUDA,
# nvcc, pytest and hypothesis installed and no package registry). From the repository root:
#
#     bash benchmarks/gpu_check.sh [OUT_DIR]      # default OUT_DIR: $OUT (the device tool's), else gpu-check
#
# 1. build   the extension with its CUDA part, just in time, for the visible GPU's architecture
#            only (one -gencode: about half the nvcc time of the default "arch + PTX");
# 2. tests   every CUDA runtime test: the fused MLP activations and saving ops, the whole-network
#            call, run_kernel, every built-in objective's generated kernels against the CPU, and
#            issue 14's attention_jvp kernels (float32/64, fp16, bf16 against float64 math, the
#            current stream, opcheck), the UNet's fused pointwise jets (every dtype against the CPU
#            ops, the current stream) and the UNet's native JVP;
# 3. bench   the suite's GPU rows: fm, lsd, esd on the paper net at batch 16384 and 100000
#            (flowcore, the eager reference and, with GPU_CHECK_TORCH_COMPILE=1, torch.compile),
#            as a table and $OUT_DIR/gpu.json;
# 4. unet    the CIFAR-10 UNet (unet-cifar, random 32x32x3 images) at batch 128 and 512: fm, lsd,
#            psd_m, meanflow, flowcore (the UNet's native JVP) against the reference, 5 rounds after
#            2 warm-up, peak memory; $OUT_DIR/unet.json. float32 activations of the 55M-parameter
#            net at batch 512 are of the order of 100 GB: a variant that runs out of GPU memory is
#            recorded as such in its row and the stage goes on (batch 128 runs first);
# 5. attention  `flowcore bench --op attention_jvp` (B=16 H=4 D=64, N = 64 256 1024 4096) on the
#            GPU in float32, bfloat16 and float16; $OUT_DIR/attention.json, attention-<dtype>.json.
#
# Each stage's output goes to OUT_DIR/<stage>.log and its exit code and seconds to
# OUT_DIR/summary.txt; a failing stage does not stop the next. Stages can be named to run only
# those (`bash benchmarks/gpu_check.sh OUT_DIR tests bench`). On the 15 minutes of device time a
# session gets, run it with the device tool's timeout_s ≈ 540 (torch.compile adds ≈ 1 min a row);
# the estimate on an H100: build 2-3 min, tests 1-2, bench 1, unet 2-3, attention < 1.
# GPU_CHECK_DRY=1 runs the same stages on the CPU (quick bench; the CUDA tests skip): a rehearsal
# of the script itself on a machine without a GPU.
set -u -o pipefail

out=${1:-${OUT:-gpu-check}}
shift $(( $# > 0 ? 1 : 0 ))
stages=${*:-build tests bench unet attention}
mkdir -p "$out"
export PYTHONUNBUFFERED=1 PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
export FLOWCORE_JIT_EXTENSION=1 MAX_JOBS=${MAX_JOBS:-16}
export PYTORCH_CUDA_ALLOC_CONF=${PYTORCH_CUDA_ALLOC_CONF:-expandable_segments:True}  # less fragmentation after an OOM
python=${PYTHON:-python3}

if [ "${GPU_CHECK_DRY:-0}" = 1 ]; then
    device=cpu
    bench_args=(--quick)
    unet_args=(--quick --objective fm lsd --batch 4)
    attention_args=(--quick)
else
    if ! arch=$("$python" -c "import torch; assert torch.cuda.is_available(); print('%d.%d' % torch.cuda.get_device_capability())"); then
        echo "gpu_check: no GPU visible to torch (GPU_CHECK_DRY=1 rehearses on the CPU)" >&2
        exit 2
    fi
    export TORCH_CUDA_ARCH_LIST=$arch
    device=cuda
    bench_args=(--objective fm lsd esd --net paper --batch 16384 100000)
    [ "${GPU_CHECK_TORCH_COMPILE:-0}" = 1 ] || bench_args+=(--no-torch-compile)
    unet_args=(--objective fm lsd psd_m meanflow --batch 128 512 --variant flowcore reference --repeats 5 --warmup 2)
    attention_args=(--tokens 64 256 1024 4096)
fi

status=0
stage() {
    local name=$1
    shift
    case " $stages " in *" $name "*) ;; *) return 0 ;; esac
    local start=$SECONDS
    "$@" 2>&1 | tee "$out/$name.log"
    local rc=$?
    echo "$name: exit $rc after $((SECONDS - start)) s" | tee -a "$out/summary.txt"
    [ "$rc" -eq 0 ] || status=1
}

stage build "$python" -c "
from flowcore.native.extension import extension_info, load_extension
load_extension()
print(extension_info())"
stage tests "$python" -m pytest -q -p no:cacheprovider -rs tests/test_mlp.py tests/test_mlp_call.py \
    tests/test_codegen_cuda.py tests/test_attention_jvp.py tests/test_unet_jvp.py tests/test_unet_jet.py \
    tests/test_unet_jet_cuda.py -k "cuda or opcheck"
stage bench "$python" -m flowcore.cli bench --device "$device" --no-compile-times "${bench_args[@]}" \
    --json "$out/gpu.json"
stage unet "$python" -m flowcore.cli bench --device "$device" --net unet-cifar --no-compile-times --no-torch-compile \
    "${unet_args[@]}" --json "$out/unet.json"
attention_dtypes() {  # float32, then the half types with float accumulation (CUDA only)
    "$python" -m flowcore.cli bench --op attention_jvp --device "$device" "${attention_args[@]}" \
        --json "$out/attention.json" || return 1
    [ "$device" = cuda ] || return 0
    for dtype in bfloat16 float16; do
        "$python" -m flowcore.cli bench --op attention_jvp --device "$device" "${attention_args[@]}" --dtype "$dtype" \
            --json "$out/attention-$dtype.json" || return 1
    done
}
stage attention attention_dtypes
exit $status
