import { SpanStatusCode, trace, type Attributes, type Span } from '@opentelemetry/api';

/**
 * Spans through the OpenTelemetry API only. The SDK that exports them is not bundled: an operator
 * who sets OTEL_EXPORTER_OTLP_TRACES_ENDPOINT preloads one (`node --import <sdk register>`), which
 * reads that same variable. Without the setting nothing here creates a span, even if an SDK is
 * present, so tracing costs one boolean test per seam.
 *
 * Spans carry names, counts and codes, never values: no SQL text, no error message (a database
 * error can quote the input that caused it), no PHI.
 */
let enabled = false;
const tracer = () => trace.getTracer('phigate');

export function enableTracing(on: boolean): void {
  enabled = on;
}

function fail(span: Span, err: unknown): void {
  const code = (err as { code?: unknown } | null)?.code;
  span.setStatus({ code: SpanStatusCode.ERROR });
  span.setAttribute('error.type', typeof code === 'string' ? code : ((err as Error | null)?.name ?? 'Error'));
}

/** Runs `fn` inside span `name` (as the active span, so nested seams become its children). */
export function inSpan<T>(name: string, attributes: Attributes, fn: () => T): T {
  if (!enabled) return fn();
  return tracer().startActiveSpan(name, { attributes }, (span) => {
    let result: T;
    try {
      result = fn();
    } catch (err) {
      fail(span, err);
      span.end();
      throw err;
    }
    if (result instanceof Promise) {
      return result.then(
        (value) => {
          span.end();
          return value;
        },
        (err: unknown) => {
          fail(span, err);
          span.end();
          throw err;
        },
      ) as T;
    }
    span.end();
    return result;
  });
}
