// `npm start`: the gateway, from the sources in development, compiled in production (see entry.js).
import { runEntry } from './entry.js';

// V8's young-generation flags and glibc's malloc settings take effect only when a process starts: on
// a Node that can, the process starts itself again with them, keeping its pid (src/heap.ts).
const heap = await runEntry('heap');
heap.relaunchWithStartupSettings();
await runEntry('main');
