// The public-API client the `prefill` and `status` commands use: --server checked, the API key and the
// TLS root certificate read from their files; a mistake in any of them is a usage error (exit 2).
import { parseHostPort } from '../cluster/peerAddress';
import { PrefillClient } from '../cluster/prefillClient';
import { readApiKeyFile, readPemFile, SecurityConfigError } from '../rpc/security';
import { CliError } from './errors';

export interface ClientFlags {
  server: string;
  apiKeyFile?: string;
  tlsCa?: string;
}

export function clientFromFlags(opts: ClientFlags): PrefillClient {
  try {
    parseHostPort(opts.server, '--server');
  } catch (e) {
    throw new CliError((e as Error).message, 2);
  }
  try {
    return new PrefillClient(opts.server, {
      apiKey: opts.apiKeyFile !== undefined ? readApiKeyFile(opts.apiKeyFile)[0] : undefined,
      tlsRootCert: opts.tlsCa !== undefined ? readPemFile(opts.tlsCa, '--tls-ca') : undefined,
    });
  } catch (e) {
    throw e instanceof SecurityConfigError ? new CliError(e.message, 2) : e;
  }
}
