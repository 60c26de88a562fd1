// Bytes sent as they are to eps.v1.PrefillService/Prefill (no protobuf encoding on our side), for tests of
// what the server does with malformed or oversized messages. Resolves with the call's error (null: OK).
import * as grpc from '@grpc/grpc-js';

export function sendRaw(address: string, bytes: Buffer, deadlineMs = 10_000): Promise<grpc.ServiceError | null> {
  // No client-side send limit: the server's receive limit is what is under test.
  const client = new grpc.Client(address, grpc.credentials.createInsecure(), { 'grpc.max_send_message_length': -1 });
  return new Promise((resolve) => {
    client.makeUnaryRequest(
      '/eps.v1.PrefillService/Prefill',
      (b: Buffer) => b,
      (b: Buffer) => b,
      bytes,
      { deadline: Date.now() + deadlineMs },
      (err) => {
        client.close();
        resolve(err);
      },
    );
  });
}
