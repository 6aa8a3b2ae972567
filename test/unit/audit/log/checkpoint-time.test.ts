import { describe, expect, it } from 'vitest';
import { formatCheckpoint, parseCheckpoint } from '../../../../src/audit/log/checkpoint.ts';
import { rangeSince } from '../../../../src/audit/verify/verify.ts';

// The signed time of a checkpoint is what a partial `audit verify --since T` picks its leaves by,
// so it has one spelling, and anything else leaves the checkpoint untimed: a range that cannot
// shrink because a line was garbled.

const root = Buffer.alloc(32, 9);
const at = Date.parse('2026-12-07T10:11:12.345Z');

describe('the checkpoint time line', () => {
  it('is written after the root and read back exactly', () => {
    const text = formatCheckpoint({ origin: 'phigate.test/audit', size: 7, root, time: at });
    expect(text).toBe(`phigate.test/audit\n7\n${root.toString('base64')}\ntime 2026-12-07T10:11:12.345Z\n`);
    expect(parseCheckpoint(text)).toEqual({ origin: 'phigate.test/audit', size: 7, root, time: at });
  });

  it('leaves a checkpoint of before the line untimed, and one with another extension line timed by its time line', () => {
    expect(parseCheckpoint(`o\n7\n${root.toString('base64')}\n`)).toEqual({ origin: 'o', size: 7, root });
    expect(parseCheckpoint(`o\n7\n${root.toString('base64')}\nsomething else\ntime 2026-12-07T10:11:12.345Z\n`)?.time).toBe(at);
  });

  it('reads no time from any other spelling, or from two time lines', () => {
    for (const line of [
      'time 2026-12-07T10:11:12Z',
      'time 2026-12-07T10:11:12.3450Z',
      'time 2026-12-07T10:11:12.345+00:00',
      'time 2026-02-30T10:11:12.345Z',
      'time  2026-12-07T10:11:12.345Z',
      'time 1796638272345',
      'time 2026-12-07T10:11:12.345Z\ntime 2001-01-01T00:00:00.000Z',
    ]) {
      const parsed = parseCheckpoint(`o\n7\n${root.toString('base64')}\n${line}\n`);
      expect(parsed, line).not.toBeNull();
      expect(parsed!.time, line).toBeUndefined();
    }
  });

  it('refuses to write a time that is not whole milliseconds of years 1970 to 9999', () => {
    for (const time of [-1, 1.5, 253_402_300_800_000, Number.NaN]) {
      expect(() => formatCheckpoint({ origin: 'o', size: 1, root, time }), String(time)).toThrow(RangeError);
    }
  });
});

describe('the range of a partial verify', () => {
  const timed = [
    { size: 10, time: 1_000 },
    { size: 20, time: 2_000 },
    { size: 30, time: 3_000 },
  ];

  it('starts at the largest checkpoint signed at or before T', () => {
    expect(rangeSince(timed, new Date(2_000))).toEqual({ fromLeaf: 20, checkpoint: { size: 20, time: 2_000 } });
    expect(rangeSince(timed, new Date(2_999))).toEqual({ fromLeaf: 20, checkpoint: { size: 20, time: 2_000 } });
    expect(rangeSince(timed, new Date(9_999))).toEqual({ fromLeaf: 30, checkpoint: { size: 30, time: 3_000 } });
  });

  it('counts a checkpoint dated back (a clock set back) as no earlier than a smaller one', () => {
    const setBack = [
      { size: 10, time: 1_000 },
      { size: 20, time: 3_000 },
      { size: 30, time: 2_000 },
    ];
    expect(rangeSince(setBack, new Date(2_500))).toEqual({ fromLeaf: 10, checkpoint: { size: 10, time: 1_000 } });
    expect(rangeSince(setBack, new Date(3_000))).toEqual({ fromLeaf: 30, checkpoint: { size: 30, time: 3_000 } });
  });

  it('is the whole log when no checkpoint was signed by T, or none carries a time', () => {
    expect(rangeSince(timed, new Date(999))).toEqual({ fromLeaf: 0, checkpoint: null });
    expect(rangeSince([], new Date(9_999))).toEqual({ fromLeaf: 0, checkpoint: null });
  });
});
