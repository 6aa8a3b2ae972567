/**
 * A policy file that cannot be trusted. Start-up stops on it: running with a policy that was
 * partly understood could disclose PHI that its authors meant to withhold.
 */
export class PolicyError extends Error {
  readonly code = 'POLICY_INVALID';
  /** Where in the file, e.g. `roles.nurse.fields.Patient.ssn`; empty for the file as a whole. */
  readonly path: string;

  constructor(path: string, problem: string, options: { source?: string; cause?: unknown } = {}) {
    super(`${options.source ?? 'policy'}: ${path ? `${path}: ` : ''}${problem}`);
    this.name = 'PolicyError';
    this.path = path;
    if (options.cause !== undefined) Object.defineProperty(this, 'cause', { value: options.cause, enumerable: false });
  }
}
