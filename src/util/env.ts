// Scoped environment variables, for the native ops that read theirs at each call (EPS_ATTENTION_KERNEL and
// the Hopper kernel's measurement knobs, native/ops.md): the bench forces each kernel in turn and the GPU
// tests run each variant, all in one process.

/** Runs fn with `vars` set in process.env, then restores each to what it was (unset stays unset). */
export async function withEnv<T>(vars: Record<string, string>, fn: () => Promise<T>): Promise<T> {
  const saved = Object.keys(vars).map((name) => [name, process.env[name]] as const);
  Object.assign(process.env, vars);
  try {
    return await fn();
  } finally {
    for (const [name, value] of saved) {
      if (value === undefined) delete process.env[name];
      else process.env[name] = value;
    }
  }
}
