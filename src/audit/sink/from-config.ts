import type { AuditLogSettings } from '../../config.ts';
import { fileSink } from './file.ts';
import type { Sink } from './sink.ts';
import { stdoutSink } from './stdout.ts';

export function sinksFromConfig(settings: AuditLogSettings): Sink[] {
  return [...(settings.sinkDir === null ? [] : [fileSink(settings.sinkDir, settings.sinkMaxBytes)]), ...(settings.sinkStdout ? [stdoutSink()] : [])];
}
