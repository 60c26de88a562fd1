// Who may talk to the cluster, and over what. Internal traffic (the rendezvous, RankService, the CPU
// data plane) carries the cluster's secret in a metadata header; the public API may require bearer
// tokens (API keys). Both are checked by a server interceptor from the call's metadata, before its
// message is read or decoded: a call without them ends UNAUTHENTICATED and reaches no handler.
// Keys are compared in constant time (SHA-256 digests, timingSafeEqual). TLS is optional: the public
// server with a certificate and key; internal traffic with mutual TLS when a CA is given too (every
// server and client presents a certificate signed by that CA, which is the cluster's identity).
import { createHash, randomBytes, timingSafeEqual } from 'node:crypto';
import * as fs from 'node:fs';
import * as grpc from '@grpc/grpc-js';
import { CHANNEL_OPTIONS } from './channelOptions';
import type { Logger } from './log';

/** The metadata header that carries the cluster secret on every internal call. */
export const CLUSTER_SECRET_HEADER = 'x-eps-cluster-secret';
/** A shorter secret (from --cluster-secret-file) is refused: 32 hex characters are 128 bits. */
export const MIN_SECRET_CHARS = 32;
/** Calls of these services need no API key: probes (Kubernetes, grpc_health_probe) send none. */
const API_KEY_EXEMPT = ['/grpc.health.v1.Health/'];

/** A security file that is missing, unreadable or unfit; the launch refuses to start. */
export class SecurityConfigError extends Error {
  readonly code = 'EPS_SECURITY_CONFIG';
  constructor(message: string) {
    super(message);
    this.name = 'SecurityConfigError';
  }
}

/** PEM files, as given on the command line. */
export interface TlsPaths {
  cert: string;
  key: string;
  /** The CA that signs every node's certificate: with it, internal traffic is mutual TLS. */
  ca: string | null;
}

/** PEM contents, read once. */
export interface TlsMaterial {
  cert: Buffer;
  key: Buffer;
  ca: Buffer | null;
}

/** What every internal server checks and every internal client presents. */
export interface InternalSecurity {
  secret: string;
  /** Mutual TLS between every process of the cluster (needs a CA), or null: plaintext, the secret alone. */
  tls: TlsMaterial | null;
}

/** A fresh per-cluster secret: 32 random bytes, hex. */
export function makeClusterSecret(): string {
  return randomBytes(32).toString('hex');
}

/** The secret of a multi-node cluster: the file's first line, at least MIN_SECRET_CHARS long. */
export function readClusterSecretFile(file: string): string {
  const secret = readText(file, '--cluster-secret-file').split(/\r?\n/)[0].trim();
  if (secret.length < MIN_SECRET_CHARS) {
    throw new SecurityConfigError(
      `--cluster-secret-file ${file}: the secret has ${secret.length} characters; at least ${MIN_SECRET_CHARS} (make one with: openssl rand -hex 32 > FILE)`,
    );
  }
  return secret;
}

/** API keys: one per line; blank lines and lines starting with # are ignored; at least one. */
export function readApiKeyFile(file: string): string[] {
  const keys = readText(file, '--api-key-file')
    .split(/\r?\n/)
    .map((l) => l.trim())
    .filter((l) => l.length > 0 && !l.startsWith('#'));
  if (keys.length === 0) throw new SecurityConfigError(`--api-key-file ${file}: no key in it (one key per line)`);
  const short = keys.findIndex((k) => k.length < 16);
  if (short >= 0) throw new SecurityConfigError(`--api-key-file ${file}: key ${short + 1} has fewer than 16 characters`);
  return keys;
}

/** One PEM file; `flag` names it in the error. */
export function readPemFile(file: string, flag: string): Buffer {
  const pem = readText(file, flag);
  if (!pem.includes('-----BEGIN ')) throw new SecurityConfigError(`${flag} ${file}: not a PEM file`);
  return Buffer.from(pem);
}

export function readTlsFiles(paths: TlsPaths): TlsMaterial {
  return {
    cert: readPemFile(paths.cert, '--tls-cert'),
    key: readPemFile(paths.key, '--tls-key'),
    ca: paths.ca === null ? null : readPemFile(paths.ca, '--tls-ca'),
  };
}

/** Checks a presented key against a set, in constant time whatever key matches or how long it is. */
export class KeySet {
  private readonly digests: Buffer[];
  constructor(keys: readonly string[]) {
    if (keys.length === 0) throw new Error('KeySet: no keys');
    this.digests = keys.map(digest);
  }
  matches(given: string | undefined): boolean {
    const d = digest(given ?? '');
    let ok = false;
    for (const k of this.digests) ok = timingSafeEqual(k, d) || ok;
    return ok && given !== undefined;
  }
}

/** A server interceptor that ends calls without the cluster secret UNAUTHENTICATED, before any work. */
export function clusterSecretInterceptor(secret: string, logger?: Logger): grpc.ServerInterceptor {
  const keys = new KeySet([secret]);
  return metadataGuard(
    (md) => keys.matches(first(md, CLUSTER_SECRET_HEADER)),
    () => false,
    'missing or wrong cluster secret',
    logger,
  );
}

/** A server interceptor that ends public calls without `authorization: Bearer <key>` of one of `keys` UNAUTHENTICATED (health probes pass). */
export function apiKeyInterceptor(keys: readonly string[], logger?: Logger): grpc.ServerInterceptor {
  const set = new KeySet(keys);
  return metadataGuard(
    (md) => set.matches(/^Bearer (.+)$/i.exec(first(md, 'authorization') ?? '')?.[1]),
    (path) => API_KEY_EXEMPT.some((p) => path.startsWith(p)),
    'missing or unknown API key (send "authorization: Bearer <key>")',
    logger,
  );
}

/** A client interceptor that adds `header: value` to every call. */
export function metadataInterceptor(header: string, value: string): grpc.Interceptor {
  return (options, nextCall) =>
    new grpc.InterceptingCall(nextCall(options), {
      start(metadata, listener, next) {
        metadata.set(header, value);
        next(metadata, listener);
      },
    });
}

/** Server credentials of an internal server: mutual TLS when configured, else plaintext. */
export function internalServerCredentials(sec: InternalSecurity): grpc.ServerCredentials {
  const tls = sec.tls;
  if (!tls) return grpc.ServerCredentials.createInsecure();
  return grpc.ServerCredentials.createSsl(tls.ca, [{ private_key: tls.key, cert_chain: tls.cert }], true);
}

/** Server options of an internal server: the secret checked on every call, messages at most `maxReceiveBytes`. */
export function internalServerOptions(
  sec: InternalSecurity,
  base: grpc.ServerOptions,
  maxReceiveBytes: number,
  logger?: Logger,
): grpc.ServerOptions {
  return { ...base, 'grpc.max_receive_message_length': maxReceiveBytes, interceptors: [clusterSecretInterceptor(sec.secret, logger)] };
}

/** How an internal client connects: credentials (mutual TLS or plaintext) and options that add the secret to every call. */
export interface InternalChannel {
  credentials: grpc.ChannelCredentials;
  options: grpc.ClientOptions;
}

export function internalChannel(sec: InternalSecurity): InternalChannel {
  const tls = sec.tls;
  const credentials = tls
    ? // Peers are reached by IP address; the cluster CA signing their certificate is what identifies them.
      grpc.credentials.createSsl(tls.ca, tls.key, tls.cert, { checkServerIdentity: () => undefined })
    : grpc.credentials.createInsecure();
  const options: grpc.ClientOptions = { ...CHANNEL_OPTIONS, interceptors: [metadataInterceptor(CLUSTER_SECRET_HEADER, sec.secret)] };
  // A name, not the peer's IP address, as TLS server name (RFC 6066); identity is checked by the CA above.
  if (tls) options['grpc.ssl_target_name_override'] = 'eps-moe.internal';
  return { credentials, options };
}

/** A plaintext channel without a secret: for tests of the data plane alone. */
export const INSECURE_CHANNEL: InternalChannel = { credentials: grpc.credentials.createInsecure(), options: CHANNEL_OPTIONS };

/** Public server credentials: TLS with the certificate and key (clients are not asked for certificates), else plaintext. */
export function publicServerCredentials(tls: TlsMaterial | null): grpc.ServerCredentials {
  if (!tls) return grpc.ServerCredentials.createInsecure();
  return grpc.ServerCredentials.createSsl(null, [{ private_key: tls.key, cert_chain: tls.cert }], false);
}

function metadataGuard(
  allowed: (md: grpc.Metadata) => boolean,
  exempt: (path: string) => boolean,
  details: string,
  logger: Logger | undefined,
): grpc.ServerInterceptor {
  let lastLogged = 0;
  return (method, call) =>
    new grpc.ServerInterceptingCall(call, {
      start(next) {
        next({
          onReceiveMetadata(metadata, mdNext) {
            if (exempt(method.path) || allowed(metadata)) {
              mdNext(metadata);
              return;
            }
            const now = Date.now();
            if (now - lastLogged >= 1000) {
              lastLogged = now;
              logger?.warn(
                { method: method.path, peer: call.getPeer(), details },
                'call refused: unauthenticated (logged at most once a second)',
              );
            }
            call.sendStatus({ code: grpc.status.UNAUTHENTICATED, details, metadata: new grpc.Metadata() });
          },
        });
      },
    });
}

function first(md: grpc.Metadata, key: string): string | undefined {
  const v = md.get(key)[0];
  return typeof v === 'string' ? v : v?.toString('utf8');
}

function digest(s: string): Buffer {
  return createHash('sha256').update(s, 'utf8').digest();
}

function readText(file: string, flag: string): string {
  try {
    return fs.readFileSync(file, 'utf8');
  } catch (e) {
    throw new SecurityConfigError(`${flag} ${file}: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`);
  }
}
