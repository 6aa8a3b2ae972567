import type { AuditLogSettings } from '../../config.ts';
import { fileSink } from './file.ts';
import type { Sink } from './sink.ts';
import { stdoutSink } from './stdout.ts';

export async function sinksFromConfig(settings: AuditLogSettings): Promise<Sink[]> {
  return [...(settings.sinkDir === null ? [] : [await fileSink(settings.sinkDir, settings.sinkMaxBytes)]), ...(settings.sinkStdout ? [stdoutSink()] : [])];
}
