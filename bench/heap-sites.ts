/**
 * `npx tsx bench/heap-sites.ts PROMOTED.heapprofile READS [ALLOCATED.heapprofile READS]`: a sampling
 * heap profile's bytes per read by allocation site (function, file and line) and by the innermost
 * package or source file, from the phigate target's BENCH_PROMOTED_DIR files (bench/targets/phigate.ts).
 * READS is the measured run's request count (req/s x duration). Given an all-allocations profile
 * (BENCH_PROMOTED_ALL=1) of a run of the same build as well, each site's promoted share: objects that
 * live as long as their request show 70-90% where requests outlive two scavenges, transient ones a
 * few percent.
 */
import { readFileSync } from 'node:fs';

interface ProfileNode {
  callFrame: { functionName: string; url: string; lineNumber: number };
  selfSize: number;
  children?: ProfileNode[];
}

/** Bytes by site and by the innermost frame that names a package, a source file or a Node module. */
function sites(file: string): { bySite: Map<string, number>; byOwner: Map<string, number>; total: number } {
  const { head } = JSON.parse(readFileSync(file, 'utf8')) as { head: ProfileNode };
  const bySite = new Map<string, number>();
  const byOwner = new Map<string, number>();
  let total = 0;
  const ownerOf = (url: string): string | null => {
    const pkg = /\/node_modules\/((?:@[^/]+\/)?[^/]+)/.exec(url);
    if (pkg) return pkg[1]!;
    const src = /\/((?:src|bench)\/.+)$/.exec(url);
    if (src) return src[1]!;
    return url.startsWith('node:') ? url : null;
  };
  const walk = (n: ProfileNode, owners: string[]): void => {
    const { functionName, url, lineNumber } = n.callFrame;
    const owner = ownerOf(url);
    const path = owner === null ? owners : [...owners, owner];
    if (n.selfSize > 0) {
      const site = `${functionName || '(anonymous)'} ${url.split('/').at(-1)}:${lineNumber + 1}`;
      bySite.set(site, (bySite.get(site) ?? 0) + n.selfSize);
      const o = path.at(-1) ?? '(native)';
      byOwner.set(o, (byOwner.get(o) ?? 0) + n.selfSize);
      total += n.selfSize;
    }
    for (const c of n.children ?? []) walk(c, path);
  };
  walk(head, []);
  return { bySite, byOwner, total };
}

const [promotedFile, promotedReads, allocatedFile, allocatedReads] = process.argv.slice(2);
if (promotedFile === undefined || !(Number(promotedReads) > 0)) throw new Error('usage: bench/heap-sites.ts PROMOTED.heapprofile READS [ALLOCATED.heapprofile READS]');
const kb = (bytes: number, reads: number) => (bytes / 1024 / reads).toFixed(2).padStart(7);
const p = sites(promotedFile);
const a = allocatedFile === undefined ? null : sites(allocatedFile);
const pr = Number(promotedReads);
const ar = Number(allocatedReads);
console.log(`${kb(p.total, pr)} KB a read in ${promotedFile}${a ? `, of ${kb(a.total, ar).trim()} KB allocated (${((100 * p.total) / pr / (a.total / ar)).toFixed(1)}%)` : ''}`);
console.log('by owner (the innermost package, source file or Node module on the stack):');
for (const [o, b] of [...p.byOwner].sort((x, y) => y[1] - x[1]).slice(0, 20)) console.log(`${kb(b, pr)} KB  ${o}`);
console.log('by site:');
for (const [s, b] of [...p.bySite].sort((x, y) => y[1] - x[1]).slice(0, 30)) {
  const all = a?.bySite.get(s);
  console.log(`${kb(b, pr)} KB${all ? ` of ${kb(all, ar)} (${((100 * b) / pr / (all / ar)).toFixed(0).padStart(3)}%)` : ''}  ${s}`);
}
