# The eps-moe cluster on CUDA: the addon built with its CUDA backend (cuBLAS, NCCL) and the
# TypeScript built into dist/. `docker run --gpus all -p 50051:50051 eps-moe` starts `launch` with one
# rank per visible GPU; any other subcommand can be given instead (e.g. `bench`, `make-model`).
#
#   docker build -t eps-moe .
#   docker run --rm --gpus all -p 50051:50051 eps-moe                          # launch, tiny model
#   docker run --rm --gpus all -v /models:/models eps-moe launch --model /models/mixtral --host 0.0.0.0
#   docker run --rm --gpus all eps-moe bench --json /dev/stdout
#
# NVIDIA's CUDA devel image with cuDNN brings nvcc, the CUDA runtime, cuBLAS (libcublas-dev), NCCL
# (libnccl-dev) and cuDNN; the build needs CMake and a host C++ compiler besides, and Node.js 24 (an LTS
# line the suite runs on: .ci/run tests 20, 24 and 26), copied from the official node image (its binary
# needs glibc >= 2.28; Ubuntu 24.04 has 2.39). Not built here: the development machines have no Docker engine.
ARG CUDA_IMAGE=nvidia/cuda:13.0.0-cudnn-devel-ubuntu24.04
ARG NODE_IMAGE=node:24-bookworm-slim

FROM ${NODE_IMAGE} AS node

FROM ${CUDA_IMAGE}
ENV DEBIAN_FRONTEND=noninteractive
# CMake from PyPI (Kitware's wheels): Ubuntu 24.04's 3.28 predates CUDA 13, whose CCCL headers moved
# to include/cccl (CMake adds that path itself from 3.31.9); the GPU hosts build with CMake 4.
RUN apt-get update \
 && apt-get install -y --no-install-recommends g++ make python3-pip ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && pip3 install --no-cache-dir --break-system-packages 'cmake>=3.31.9,<5' \
 && cmake --version

COPY --from=node /usr/local/bin/node /usr/local/bin/node
COPY --from=node /usr/local/lib/node_modules/npm /usr/local/lib/node_modules/npm
RUN ln -s ../lib/node_modules/npm/bin/npm-cli.js /usr/local/bin/npm \
 && ln -s ../lib/node_modules/npm/bin/npx-cli.js /usr/local/bin/npx \
 && node --version && npm --version

WORKDIR /opt/eps-moe

# Dependencies first (their layer is reused while only sources change). --ignore-scripts: the
# package's own install/prepare scripts build the addon and dist/, which need the sources copied
# below, so they run explicitly after them (the only dependency with an install script, protobufjs,
# merely prints a version-scheme warning).
COPY package.json package-lock.json ./
RUN npm ci --ignore-scripts --no-audit --no-fund

COPY tsconfig.json CMakeLists.txt binding.gyp ./
COPY cmake ./cmake
COPY native ./native
COPY proto ./proto
COPY src ./src
COPY bin ./bin
COPY scripts ./scripts

# EPS_CUDA=1 makes the build fail, naming what is missing, rather than fall back to the CPU backend.
# No GPU is visible while an image builds: the architectures are chosen here (sm_80 and sm_90 machine
# code, PTX for newer GPUs), and libcuda comes from the toolkit's stubs (LIBRARY_PATH of the image).
ARG CMAKE_CUDA_ARCHITECTURES="80;90"
ENV EPS_CUDA=1 CMAKE_CUDA_ARCHITECTURES=${CMAKE_CUDA_ARCHITECTURES}
# The require() checks that the addon's libraries (cudart, cuBLAS, NCCL) resolve; it cannot ask for
# the cuda backend (backends() lists it only when a GPU is visible).
RUN npm run build:native \
 && npm run build \
 && node -e "require('./build/Release/eps_native.node')" \
 && npm prune --omit=dev --no-audit --no-fund

# EPS_CACHE_DIR: where `launch` makes its built-in tiny model on first use (a volume keeps it).
ENV NODE_ENV=production EPS_CACHE_DIR=/var/cache/eps-moe
# bin/eps-moe.js is executable in git (mode 100755) and finds dist/ through its real path.
RUN mkdir -p /var/cache/eps-moe && ln -s /opt/eps-moe/bin/eps-moe.js /usr/local/bin/eps-moe

# 50051: the public gRPC API (and grpc.health.v1); 9400: Prometheus metrics with --metrics-port 9400.
EXPOSE 50051 9400
ENTRYPOINT ["eps-moe"]
# launch listens on 127.0.0.1 by default, which is unreachable from outside a container.
CMD ["launch", "--host", "0.0.0.0"]
