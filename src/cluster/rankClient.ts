// The router's handle on one rank: typed calls of eps.v1.RankService.
import * as grpc from '@grpc/grpc-js';
import type { InternalChannel } from '../rpc/security';
import {
  rankService,
  type LoadProgressMsg,
  type LoadRequestMsg,
  type RankHealthMsg,
  type ShutdownRequestMsg,
  type StepRequestMsg,
  type StepResponseMsg,
} from '../rpc/protos';

type Callback<T> = (err: grpc.ServiceError | null, res?: T) => void;

/** The methods of the generated RankService client that the router calls. */
interface RankServiceClient extends grpc.Client {
  Load(req: LoadRequestMsg, options: grpc.CallOptions): grpc.ClientReadableStream<LoadProgressMsg>;
  Step(req: StepRequestMsg, options: grpc.CallOptions, cb: Callback<StepResponseMsg>): grpc.ClientUnaryCall;
  Health(req: object, options: grpc.CallOptions, cb: Callback<RankHealthMsg>): grpc.ClientUnaryCall;
  Shutdown(req: ShutdownRequestMsg, options: grpc.CallOptions, cb: Callback<object>): grpc.ClientUnaryCall;
}

export class RankClient {
  private readonly client: RankServiceClient;

  constructor(
    readonly rank: number,
    readonly address: string,
    channel: InternalChannel,
  ) {
    const Client = grpc.makeClientConstructor(rankService(), 'RankService');
    // Every call carries the cluster secret (channel.options' interceptor), over mutual TLS when configured.
    this.client = new Client(address, channel.credentials, channel.options) as unknown as RankServiceClient;
  }

  /** Builds the rank's engine; `onProgress` sees every progress message. Resolves once it reports done. */
  load(modelDir: string, onProgress: (p: LoadProgressMsg) => void): Promise<void> {
    return new Promise((resolve, reject) => {
      const call = this.client.Load({ modelDir }, {});
      let done = false;
      call.on('data', (p: LoadProgressMsg) => {
        onProgress(p);
        if (p.done) done = true;
      });
      call.on('error', reject);
      call.on('end', () => (done ? resolve() : reject(new Error(`rank ${this.rank} ended its load without finishing`))));
    });
  }

  step(req: StepRequestMsg, timeoutMs: number): Promise<StepResponseMsg> {
    return unary((cb) => this.client.Step(req, { deadline: Date.now() + timeoutMs }, cb));
  }

  health(timeoutMs = 2000): Promise<RankHealthMsg> {
    return unary((cb) => this.client.Health({}, { deadline: Date.now() + timeoutMs }, cb));
  }

  async shutdown(reason: string, failed: boolean, timeoutMs = 5000): Promise<void> {
    await unary((cb) => this.client.Shutdown({ reason, failed }, { deadline: Date.now() + timeoutMs }, cb));
  }

  close(): void {
    this.client.close();
  }
}

function unary<T>(call: (cb: Callback<T>) => void): Promise<T> {
  return new Promise((resolve, reject) => call((err, res) => (err ? reject(err) : resolve(res as T))));
}
