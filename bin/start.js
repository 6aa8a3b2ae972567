// `npm start`: the gateway, from the sources in development, compiled in production (see entry.js).
import { runEntry } from './entry.js';

await runEntry('main');
