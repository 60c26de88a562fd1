#!/usr/bin/env bash
# Starts this node's part of a multi-node eps-moe cluster, the way torchrun does: run the same line
# on every node, changing only --node-rank. Node 0 runs the router (the public gRPC server, on
# --port of every interface) and the rendezvous at --coordinator; every node runs --ranks rank
# processes (one per GPU), which join the rendezvous. The environment passes through untouched
# (NCCL_SOCKET_IFNAME, NCCL_IB_HCA, CUDA_VISIBLE_DEVICES...).
#
#   node 0:  scripts/launch-cluster.sh --nnodes 2 --node-rank 0 --coordinator 10.0.0.1:29500 --model /models/mixtral --ranks 8 --cluster-secret-file S
#   node 1:  scripts/launch-cluster.sh --nnodes 2 --node-rank 1 --coordinator 10.0.0.1:29500 --model /models/mixtral --ranks 8 --cluster-secret-file S
#
# S is the same secret file on every node (openssl rand -hex 32 > S; mode 0600): every internal call
# carries it (README, "Security"); add --tls-cert/--tls-key/--tls-ca for mutual TLS between nodes.
# --coordinator is node 0's address as the other nodes reach it; the model folder must exist at the
# same path on every node. Any other `eps-moe launch` flag may follow (--backend, --port, ...).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

usage() {
  sed -n '2,14p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//' >&2
  exit 2
}

have() { # have FLAG ARGS...: whether FLAG appears among ARGS (as "--flag value" or "--flag=value")
  local flag="$1"
  shift
  for a in "$@"; do [[ "$a" == "$flag" || "$a" == "$flag="* ]] && return 0; done
  return 1
}

[[ $# -eq 0 || "${1:-}" == "-h" || "${1:-}" == "--help" ]] && usage
for required in --nnodes --node-rank --coordinator; do
  have "$required" "$@" || { echo "launch-cluster.sh: $required is required" >&2; usage; }
done
[[ -f "$root/dist/cli/main.js" ]] || { echo "launch-cluster.sh: build first (npm run build in $root)" >&2; exit 1; }

extra=()
# Clients on other hosts reach the router: listen on every interface unless told otherwise.
have --host "$@" || extra+=(--host 0.0.0.0)
exec node "$root/bin/eps-moe.js" launch "${extra[@]}" "$@"
