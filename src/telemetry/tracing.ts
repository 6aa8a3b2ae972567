import { INVALID_SPAN_CONTEXT, SpanStatusCode, trace, type Attributes, type Span } from '@opentelemetry/api';

/**
 * Spans through the OpenTelemetry API only, so that the seams that open them (auth, policy, SQL,
 * decryption, audit, KMS) depend on no SDK. With OTEL_EXPORTER_OTLP_TRACES_ENDPOINT set,
 * start-tracing.ts registers the SDK that exports them and turns them on; without it nothing here
 * creates a span, even if an SDK is present, so tracing costs one boolean test per seam.
 *
 * Spans carry names, counts and codes, never values: no SQL text, no error message (a database
 * error can quote the input that caused it), no PHI.
 */
let enabled = false;
const tracer = () => trace.getTracer('phigate');
// Handed to `fn` while tracing is off, so that a caller may set attributes without asking first.
const NOT_RECORDING = trace.wrapSpanContext(INVALID_SPAN_CONTEXT);

export function enableTracing(on: boolean): void {
  enabled = on;
}

/** Whether spans are being made; lets a path run per PHI value skip making inSpan's closure. */
export function tracing(): boolean {
  return enabled;
}

function fail(span: Span, err: unknown): void {
  const code = (err as { code?: unknown } | null)?.code;
  span.setStatus({ code: SpanStatusCode.ERROR });
  span.setAttribute('error.type', typeof code === 'string' ? code : ((err as Error | null)?.name ?? 'Error'));
}

/** Runs `fn` inside span `name` (as the active span, so nested seams become its children). */
export function inSpan<T>(name: string, attributes: Attributes, fn: (span: Span) => T): T {
  if (!enabled) return fn(NOT_RECORDING);
  return tracer().startActiveSpan(name, { attributes }, (span) => {
    let result: T;
    try {
      result = fn(span);
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
