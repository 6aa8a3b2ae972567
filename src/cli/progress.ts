/**
 * A one-line progress bar on a TTY (redrawn at most 10 times a second); a line per 10% elsewhere
 * (CI logs stay short). Both show the rate since the bar was made (make it just before the work
 * starts) and the time left at that rate.
 */
export function progressBar(label: string, stream: NodeJS.WriteStream, now: () => number = Date.now): (done: number, total: number) => void {
  const started = now();
  let lastDecile = -1;
  let lastDraw = 0;
  return (done, total) => {
    const t = now();
    const ratio = total === 0 ? 1 : done / total;
    const finished = done >= total;
    const rate = t > started ? (done / (t - started)) * 1000 : 0;
    const speed = rate > 0 ? `${Math.round(rate).toLocaleString('en-US')}/s` : '-/s';
    const tail = finished ? `in ${duration((t - started) / 1000)}` : `ETA ${rate > 0 ? duration((total - done) / rate) : '?'}`;
    if (stream.isTTY) {
      if (!finished && t - lastDraw < 100) return;
      lastDraw = t;
      const width = 30;
      const filled = Math.round(ratio * width);
      stream.write(`\r${label} [${'#'.repeat(filled)}${'.'.repeat(width - filled)}] ${done}/${total} ${speed} ${tail}\x1b[K${finished ? '\n' : ''}`);
      return;
    }
    const decile = Math.floor(ratio * 10);
    if (decile !== lastDecile) {
      lastDecile = decile;
      stream.write(`${label}: ${done}/${total} ${speed} ${tail}\n`);
    }
  };
}

/** 75 -> '1:15', 3725 -> '1:02:05' */
export function duration(seconds: number): string {
  const s = Math.max(0, Math.round(seconds));
  const h = Math.floor(s / 3600);
  const m = Math.floor((s % 3600) / 60);
  const ss = String(s % 60).padStart(2, '0');
  return h > 0 ? `${h}:${String(m).padStart(2, '0')}:${ss}` : `${m}:${ss}`;
}

/** A progress bar made at its first report: for a phase that starts long after the bar is handed out. */
export function phaseProgressBar(label: string, stream: NodeJS.WriteStream, now: () => number = Date.now): (done: number, total: number) => void {
  let bar: ((done: number, total: number) => void) | null = null;
  return (done, total) => (bar ??= progressBar(label, stream, now))(done, total);
}
