# Sourced by the scripts/gpu-*.sh that run the addon on the GPU host (from the project root, .gpu carried):
# the environment they share (the CUDA build forced on, sm_90 only, Node from .gpu, never NVLink
# multicast), and gpu_build, a clean build of the addon.
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1
export EPS_CUDA=${EPS_CUDA:-1} CMAKE_CUDA_ARCHITECTURES=${CMAKE_CUDA_ARCHITECTURES:-90} PATH=/usr/local/cuda/bin:$PATH
export PYTHONUNBUFFERED=1
GPU_ENV_NO_BUILD=1 source .gpu/env.sh

# gpu_build LOGDIR START: builds the addon afresh (log: LOGDIR/build.log), prints its backends and
# versions and the seconds since START; exits the script when the build fails.
gpu_build() {
  rm -rf build
  npm run --silent build:native > "$1/build.log" 2>&1 || { tail -30 "$1/build.log"; echo "build failed (log: $1/build.log)"; exit 1; }
  node -e "const a=require('./build/Release/eps_native.node'); console.log(a.backends(), JSON.stringify(a.versions()))" | tee -a "$1/build.log"
  echo "build: ok ($(($(date +%s) - $2)) s)"
}
