// The cluster's limits and timeouts (the launch flags such as --max-tokens-per-rank override them),
// read by the launcher and the router.

export interface ClusterTuning {
  maxTokensPerRank: number;
  maxWaitMs: number;
  maxQueuedSequences: number;
  maxSequencesPerRequest: number;
  maxTopLogprobs: number;
  /** Bytes on the wire of the requests in the router at once (from decoding to answer); beyond, RESOURCE_EXHAUSTED before decoding. */
  maxInflightRequestBytes: number;
  stepTimeoutMs: number;
  collectiveTimeoutMs: number;
  rendezvousTimeoutMs: number;
  /** After SIGINT/SIGTERM, how long admitted requests may take; then everything stops. */
  drainTimeoutMs: number;
  /** After a failure, how long the router keeps answering NOT_SERVING / UNAVAILABLE before it exits. */
  failureLingerMs: number;
}

export const DEFAULT_TUNING: ClusterTuning = {
  maxTokensPerRank: 8192,
  maxWaitMs: 5,
  maxQueuedSequences: 1024,
  maxSequencesPerRequest: 256,
  maxTopLogprobs: 20,
  maxInflightRequestBytes: 64 << 20,
  stepTimeoutMs: 120_000,
  collectiveTimeoutMs: 120_000,
  rendezvousTimeoutMs: 300_000,
  drainTimeoutMs: 30_000,
  failureLingerMs: 3_000,
};
