// Loads the native addon once. The build (cmake-js or node-gyp) puts it in build/Release; EPS_NATIVE
// names another file (e.g. a CUDA build kept beside a CPU one).
import * as fs from 'fs';
import * as path from 'path';
import type { BackendKind, NativeAddon } from './addonTypes';

export class AddonLoadError extends Error {
  readonly code = 'EPS_ADDON_LOAD';
}

let loaded: NativeAddon | undefined;

function candidates(): string[] {
  const root = path.resolve(__dirname, '..', '..');
  const list = [path.join(root, 'build', 'Release', 'eps_native.node')];
  if (process.env.EPS_NATIVE) list.unshift(path.resolve(process.env.EPS_NATIVE));
  return list;
}

export function addon(): NativeAddon {
  if (loaded) return loaded;
  const tried: string[] = [];
  for (const file of candidates()) {
    if (!fs.existsSync(file)) {
      tried.push(`${file} (missing)`);
      continue;
    }
    try {
      loaded = require(file) as NativeAddon;
      return loaded;
    } catch (e) {
      tried.push(`${file} (${(e as Error).message.split('\n')[0]})`);
    }
  }
  throw new AddonLoadError(`the eps-moe native addon did not load; run \`npm run build:native\`. Tried: ${tried.join('; ')}`);
}

export function hasBackend(kind: BackendKind): boolean {
  return addon().backends().includes(kind);
}

/** The best backend this addon has: CUDA when compiled in and a GPU is visible, else the CPU. */
export function defaultBackend(): BackendKind {
  return hasBackend('cuda') ? 'cuda' : 'cpu';
}
