// Lets the cluster tests run real processes (launcher, ranks, CLI) straight from src/*.ts, without a
// build: `node -r ./test/clusterTsRegister.js src/...`. Each .ts file is transpiled on require (no
// type checking: `npx tsc --noEmit` does that); transpiled files are cached by content hash under
// the OS temp folder, since a cluster test starts many processes that load the same files.
// Children spawned with the parent's execArgv inherit it.
'use strict';
const crypto = require('crypto');
const fs = require('fs');
const os = require('os');
const path = require('path');

const cacheDir = path.join(os.tmpdir(), 'eps-moe-ts-cache');
let ts = null;

function transpile(source, filename) {
  ts ??= require('typescript');
  const compilerOptions = {
    module: ts.ModuleKind.CommonJS,
    target: ts.ScriptTarget.ES2022,
    esModuleInterop: true,
    inlineSourceMap: true,
  };
  return ts.transpileModule(source, { compilerOptions, fileName: filename }).outputText;
}

require.extensions['.ts'] = function compileTs(module, filename) {
  const source = fs.readFileSync(filename, 'utf8');
  const key = crypto.createHash('sha1').update(filename).update('\0').update(source).digest('hex');
  const cached = path.join(cacheDir, `${key}.js`);
  let output;
  try {
    output = fs.readFileSync(cached, 'utf8');
  } catch {
    output = transpile(source, filename);
    try {
      fs.mkdirSync(cacheDir, { recursive: true });
      const tmp = `${cached}.${process.pid}.tmp`;
      fs.writeFileSync(tmp, output);
      fs.renameSync(tmp, cached);
    } catch {
      // A cache that cannot be written only costs time.
    }
  }
  module._compile(output, filename);
};
