import { execFile } from 'node:child_process';
import { writeFile } from 'node:fs/promises';
import path from 'node:path';
import { promisify } from 'node:util';

const openssl = (args: string[]) => promisify(execFile)('openssl', args);

export interface CertFiles {
  readonly cert: string;
  readonly key: string;
}

// P-256 keys: generated in milliseconds, unlike RSA, and every TLS 1.2+ stack accepts them.
const EC_KEY = ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes'];

/** A throwaway certificate authority, valid for a day, as PEM files in `dir`. */
export async function createTestCa(dir: string, name: string): Promise<CertFiles> {
  const cert = path.join(dir, `${name}.crt`);
  const key = path.join(dir, `${name}.key`);
  await openssl(['req', '-x509', ...EC_KEY, '-keyout', key, '-out', cert, '-days', '1', '-subj', `/CN=${name}`,
    '-addext', 'basicConstraints=critical,CA:TRUE', '-addext', 'keyUsage=critical,keyCertSign,cRLSign']);
  return { cert, key };
}

/** A server certificate for `dnsNames`, signed by `ca`. */
export async function issueServerCert(dir: string, name: string, ca: CertFiles, dnsNames: readonly string[]): Promise<CertFiles> {
  const cert = path.join(dir, `${name}.crt`);
  const key = path.join(dir, `${name}.key`);
  const csr = path.join(dir, `${name}.csr`);
  const ext = path.join(dir, `${name}.ext`);
  await writeFile(ext, `subjectAltName=${dnsNames.map((n) => `DNS:${n}`).join(',')}\nextendedKeyUsage=serverAuth\n`);
  await openssl(['req', ...EC_KEY, '-keyout', key, '-out', csr, '-subj', `/CN=${dnsNames[0] ?? name}`]);
  await openssl(['x509', '-req', '-in', csr, '-CA', ca.cert, '-CAkey', ca.key, '-CAcreateserial', '-days', '1', '-out', cert, '-extfile', ext]);
  return { cert, key };
}
