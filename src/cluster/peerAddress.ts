// Addresses of ranks as the router sees them.

/**
 * The host part of a grpc-js peer string ("127.0.0.1:5000", "::1:5000", "::ffff:10.0.0.2:5000"),
 * ready to put before ":port" (IPv6 bracketed; IPv4-mapped IPv6 as plain IPv4).
 */
export function peerHost(peer: string): string {
  const cut = peer.lastIndexOf(':');
  let host = cut > 0 && /^\d+$/.test(peer.slice(cut + 1)) ? peer.slice(0, cut) : peer;
  host = host.replace(/^\[(.*)\]$/, '$1');
  const mapped = /^::ffff:(\d+\.\d+\.\d+\.\d+)$/i.exec(host);
  if (mapped) return mapped[1];
  return host.includes(':') ? `[${host}]` : host;
}

/** host:port split, for --coordinator and --server arguments; IPv6 hosts in brackets. */
export function parseHostPort(text: string, what: string): { host: string; port: number } {
  const m = /^(\[[^\]]+\]|[^:]+):(\d+)$/.exec(text.trim());
  const port = m ? Number(m[2]) : NaN;
  if (!m || !(port > 0 && port < 65536)) throw new RangeError(`${what}: expected HOST:PORT, got ${JSON.stringify(text)}`);
  return { host: m[1], port };
}
