// gRPC channel and server options shared by every internal connection of the cluster.
import type { ChannelOptions } from '@grpc/grpc-js';

/** Keepalive pings notice a peer that vanished without closing its sockets (a host lost, a cable
 *  pulled) within about 15 s; a process that dies is noticed at once, its sockets are closed. */
export const CHANNEL_OPTIONS: ChannelOptions = {
  // Ranks of other nodes may start before node 0's router: retry the connection every 2 s at most
  // (grpc-js's default backoff grows to 120 s, longer than the rendezvous waits).
  'grpc.initial_reconnect_backoff_ms': 250,
  'grpc.max_reconnect_backoff_ms': 2_000,
  'grpc.keepalive_time_ms': 10_000,
  'grpc.keepalive_timeout_ms': 5_000,
  'grpc.keepalive_permit_without_calls': 1,
  'grpc.max_receive_message_length': 64 << 20,
  'grpc.max_send_message_length': 64 << 20,
};

export const SERVER_OPTIONS: ChannelOptions = {
  'grpc.keepalive_time_ms': 10_000,
  'grpc.keepalive_timeout_ms': 5_000,
  'grpc.keepalive_permit_without_calls': 1,
  'grpc.http2.min_ping_interval_without_data_ms': 5_000,
  'grpc.max_receive_message_length': 64 << 20,
  'grpc.max_send_message_length': 64 << 20,
};
