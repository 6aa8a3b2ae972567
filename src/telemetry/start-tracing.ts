import { readFile } from 'node:fs/promises';
import { context, trace } from '@opentelemetry/api';
import { AsyncLocalStorageContextManager } from '@opentelemetry/context-async-hooks';
import { ExportResultCode } from '@opentelemetry/core';
import { OTLPTraceExporter } from '@opentelemetry/exporter-trace-otlp-http';
import { resourceFromAttributes } from '@opentelemetry/resources';
import { BatchSpanProcessor, TracerProvider, type SpanExporter } from '@opentelemetry/sdk-trace';
import type { Logger } from '../log.ts';
import { enableTracing } from './tracing.ts';

export interface Tracing {
  /** Exports the spans still buffered and stops; bounded in time, and never throws. */
  shutdown(): Promise<void>;
}

export interface TracingOptions {
  /** OTLP/HTTP traces endpoint (config.otelExporterUrl), used as given: no path is appended. */
  readonly endpoint: string;
  readonly scheduleDelayMs: number;
  readonly logger: Logger;
}

// Spans are not worth holding up a stop that an orchestrator will turn into a kill anyway.
const SHUTDOWN_LIMIT_MS = 5_000;
// A collector that is down fails every batch: one line a minute says so without flooding the log.
const FAILURE_LOG_INTERVAL_MS = 60_000;

/**
 * Registers the OpenTelemetry SDK that exports phigate's spans: a tracer provider with a batch
 * processor and an OTLP/HTTP (JSON) exporter, and an AsyncLocalStorage context manager, without
 * which every seam's span would start a trace of its own instead of joining its request's.
 * Exporting runs in the background: a slow or unreachable collector never delays a request.
 *
 * Loaded with a dynamic import, and only when an endpoint is configured.
 */
export async function startTracing(options: TracingOptions): Promise<Tracing> {
  const { logger } = options;
  const exporter = logFailures(new OTLPTraceExporter({ url: options.endpoint }), logger);
  const provider = new TracerProvider({
    resource: resourceFromAttributes({ 'service.name': 'phigate', 'service.version': await packageVersion() }),
    spanProcessors: [new BatchSpanProcessor({ exporter, scheduledDelayMillis: options.scheduleDelayMs })],
  });
  context.setGlobalContextManager(new AsyncLocalStorageContextManager().enable());
  if (!trace.setGlobalTracerProvider(provider)) {
    // The README used to tell operators to preload an SDK; one that still does keeps its own.
    logger.warn('an OpenTelemetry SDK was registered before phigate started (preloaded?); spans go to its exporter');
  }
  enableTracing(true);
  logger.info({ scheduleDelayMs: options.scheduleDelayMs }, 'exporting spans over OTLP/HTTP');

  return {
    async shutdown() {
      enableTracing(false);
      let timer: NodeJS.Timeout | undefined;
      const outcome = await Promise.race([
        // A failed export was logged by logFailures already.
        provider.shutdown().then(
          () => 'done',
          () => 'failed',
        ),
        new Promise<'timeout'>((resolve) => (timer = setTimeout(() => resolve('timeout'), SHUTDOWN_LIMIT_MS))),
      ]);
      clearTimeout(timer);
      if (outcome === 'timeout') logger.warn({ limitMs: SHUTDOWN_LIMIT_MS }, 'span export still running at shutdown; its spans are lost');
    },
  };
}

/**
 * Logs failed exports by the error's name, code (ECONNREFUSED, an HTTP status) and message (the
 * exporter's own words, Node's network error, or the HTTP reason phrase), never its `data`, the
 * body the collector answered with. Spans carry no PHI or token, so no export error can quote one;
 * the exporter's diagnostics, which can quote the headers it was given, are never logged.
 */
function logFailures(exporter: SpanExporter, logger: Logger): SpanExporter {
  let lastLine = -Infinity;
  let unlogged = 0;
  const failed = (error: unknown, spans: number) => {
    const now = Date.now();
    if (now - lastLine < FAILURE_LOG_INTERVAL_MS) {
      unlogged++;
      return;
    }
    const err = error as { name?: unknown; code?: unknown; message?: unknown } | undefined;
    logger.warn({ err: { name: err?.name, code: err?.code, message: err?.message }, spans, failuresNotLogged: unlogged }, 'spans could not be exported; they are dropped');
    lastLine = now;
    unlogged = 0;
  };
  return {
    export(spans, done) {
      exporter.export(spans, (result) => {
        if (result.code !== ExportResultCode.SUCCESS) failed(result.error, spans.length);
        done(result);
      });
    },
    shutdown: () => exporter.shutdown(),
  };
}

async function packageVersion(): Promise<string> {
  const pkg = JSON.parse(await readFile(new URL('../../package.json', import.meta.url), 'utf8')) as { version: string };
  return pkg.version;
}
