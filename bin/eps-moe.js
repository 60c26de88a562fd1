#!/usr/bin/env node
// The eps-moe command; the TypeScript build (npm run build) puts the code in dist/.
require('../dist/cli/main.js').main(process.argv);
