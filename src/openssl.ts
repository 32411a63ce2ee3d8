// Every openssl command line the tool runs, and the small files they read. Pure: no I/O.
//
// One migration's certificates: a CA made for it alone signs one certificate for the
// destination's page server and one for the source's dumper; the CA's key is deleted
// once both are signed, so nothing else can ever be signed by it. `openssl ca` rather
// than `x509 -req`: it can backdate the certificates (-startdate), so a destination
// whose clock runs behind the source's does not see them as not yet valid.

export const CERT_CURVE = 'P-256';
/** Validity: from an hour before now (clock skew between the hosts) to a day after. */
export const CERT_BACKDATE_S = 3600;
export const CERT_LIFETIME_S = 86_400;

/** "20261123154400Z": openssl ca's date form (UTC). */
export function opensslDate(d: Date): string {
  return d
    .toISOString()
    .replace(/[-:T]/g, '')
    .replace(/\.\d+Z$/, 'Z');
}

export const openssl = {
  version: () => ['openssl', 'version'],
  /** A new EC key and a certificate request for it (the key unencrypted, mode 0600). */
  request: (key: string, csr: string, cn: string) => [
    'openssl',
    'req',
    '-new',
    '-newkey',
    'ec',
    '-pkeyopt',
    `ec_paramgen_curve:${CERT_CURVE}`,
    '-nodes',
    '-keyout',
    key,
    '-out',
    csr,
    '-subj',
    `/CN=${cn}`,
    '-batch',
  ],
  /**
   * Signs CSR with the CA (selfSign: the CA's own certificate, CA's key KEY). EXT names
   * the extension section of CONFIG to apply.
   */
  sign(o: {
    config: string;
    csr: string;
    out: string;
    ext: string;
    start: Date;
    end: Date;
    selfSign?: boolean;
    caCert?: string;
    caKey: string;
  }): string[] {
    const argv = [
      'openssl',
      'ca',
      '-batch',
      '-notext',
      '-config',
      o.config,
      '-extensions',
      o.ext,
      '-in',
      o.csr,
      '-out',
      o.out,
      '-keyfile',
      o.caKey,
      '-startdate',
      opensslDate(o.start),
      '-enddate',
      opensslDate(o.end),
    ];
    if (o.selfSign) argv.push('-selfsign');
    else argv.push('-cert', o.caCert!);
    return argv;
  },
};

/**
 * `openssl ca`'s configuration for one migration: its database in DIR, every name
 * accepted, and the three kinds of certificate. Both leaf certificates name the page
 * server's address: the dumper checks the server's against the address it connects to,
 * and CRIU's page server checks the client's against the same address (it verifies the
 * peer's name on both ends, not only the server's).
 */
export function caConfig(dir: string, address: string | string[], bothWays = false): string {
  const one = (a: string) => (/:/.test(a) ? `IP:${a}` : /^[\d.]+$/.test(a) ? `IP:${a}` : `DNS:${a}`);
  const san = (Array.isArray(address) ? address : [address]).map(one).join(', ');
  // The page server's and the dumper's: the same but for what the key may be used for.
  // bothWays (hybrid: pre-dumps to the destination, then lazy pages from the source):
  // each end is a server once and a client once.
  const leaf = (section: string, purpose: string) => `[${section}]
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature
extendedKeyUsage = ${bothWays ? 'serverAuth, clientAuth' : purpose}
subjectAltName = ${san}
authorityKeyIdentifier = keyid
`;
  return `[ca]
default_ca = migration

[migration]
dir = ${dir}
database = ${dir}/index.txt
new_certs_dir = ${dir}
serial = ${dir}/serial
default_md = sha256
policy = any
unique_subject = no
copy_extensions = none

[any]
commonName = supplied

[ca_cert]
basicConstraints = critical, CA:TRUE, pathlen:0
keyUsage = critical, keyCertSign
subjectKeyIdentifier = hash

${leaf('server_cert', 'serverAuth')}
${leaf('client_cert', 'clientAuth')}`;
}

/** CRIU's configuration lines that make a dump talk TLS to the page server (paths absolute and plain: see hold.criuSafePath). */
export function criuTlsConfig(f: { caCert: string; cert: string; key: string }): string {
  return `tls\ntls-cacert ${f.caCert}\ntls-cert ${f.cert}\ntls-key ${f.key}\n`;
}
