// Entry point for running the CLI from the TypeScript sources (tests, development):
//   node -r ./test/clusterTsRegister.js src/cli/run.ts <command> ...
import { main } from './main';

void main(process.argv);
