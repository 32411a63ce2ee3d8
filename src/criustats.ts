// CRIU's stats-dump image, decoded in TypeScript: a magic header, then one
// length-prefixed protobuf StatsEntry { dump_stats_entry dump = 1; ... }. Pure.

export interface DumpStats {
  /** Microseconds, as CRIU records them. */
  freezingTimeUs: number;
  frozenTimeUs: number;
  memdumpTimeUs: number;
  memwriteTimeUs: number;
  pagesScanned: number;
  pagesSkippedParent: number;
  pagesWritten: number;
  pagesLazy: number;
}

const IMG_COMMON_MAGIC = 0x54564319;
const IMG_SERVICE_MAGIC = 0x55105940;
export const STATS_MAGIC = 0x57093306;

/** Reads one varint at pos; returns [value, next pos]. Values beyond 2^53 lose precision. */
function varint(buf: Buffer, pos: number): [number, number] {
  let result = 0;
  let mul = 1;
  for (;;) {
    if (pos >= buf.length) throw new Error('stats image: truncated varint');
    const b = buf[pos++];
    result += (b & 0x7f) * mul;
    if (!(b & 0x80)) return [result, pos];
    mul *= 128;
  }
}

/** Field number -> value for varint fields, or -> Buffer for length-delimited ones. */
function fields(buf: Buffer): Map<number, number | Buffer> {
  const out = new Map<number, number | Buffer>();
  let pos = 0;
  while (pos < buf.length) {
    let key: number;
    [key, pos] = varint(buf, pos);
    const field = Math.floor(key / 8);
    const wire = key & 7;
    if (wire === 0) {
      let v: number;
      [v, pos] = varint(buf, pos);
      out.set(field, v);
    } else if (wire === 2) {
      let len: number;
      [len, pos] = varint(buf, pos);
      out.set(field, buf.subarray(pos, pos + len));
      pos += len;
    } else if (wire === 1) {
      pos += 8;
    } else if (wire === 5) {
      pos += 4;
    } else {
      throw new Error(`stats image: unsupported wire type ${wire}`);
    }
  }
  return out;
}

export function decodeStatsImage(img: Buffer): DumpStats {
  let pos = 0;
  const first = img.readUInt32LE(0);
  pos = first === IMG_COMMON_MAGIC || first === IMG_SERVICE_MAGIC ? 8 : 4;
  const magic = img.readUInt32LE(pos - 4);
  if (magic !== STATS_MAGIC) throw new Error(`not a CRIU stats image (magic 0x${magic.toString(16)})`);
  const size = img.readUInt32LE(pos);
  const entry = fields(img.subarray(pos + 4, pos + 4 + size));
  const dump = entry.get(1);
  if (!Buffer.isBuffer(dump)) throw new Error('stats image: no dump statistics');
  const d = fields(dump);
  const n = (f: number) => (typeof d.get(f) === 'number' ? (d.get(f) as number) : 0);
  return {
    freezingTimeUs: n(1),
    frozenTimeUs: n(2),
    memdumpTimeUs: n(3),
    memwriteTimeUs: n(4),
    pagesScanned: n(5),
    pagesSkippedParent: n(6),
    pagesWritten: n(7),
    pagesLazy: n(9),
  };
}

/** For tests: encodes a stats image the way CRIU writes one. */
export function encodeStatsImage(s: DumpStats): Buffer {
  const vint = (v: number) => {
    const bytes: number[] = [];
    do {
      let b = v % 128;
      v = Math.floor(v / 128);
      if (v > 0) b |= 0x80;
      bytes.push(b);
    } while (v > 0);
    return Buffer.from(bytes);
  };
  const field = (f: number, v: number) => Buffer.concat([vint(f * 8), vint(v)]);
  const dump = Buffer.concat([
    field(1, s.freezingTimeUs),
    field(2, s.frozenTimeUs),
    field(3, s.memdumpTimeUs),
    field(4, s.memwriteTimeUs),
    field(5, s.pagesScanned),
    field(6, s.pagesSkippedParent),
    field(7, s.pagesWritten),
    field(9, s.pagesLazy),
  ]);
  const entry = Buffer.concat([vint(1 * 8 + 2), vint(dump.length), dump]);
  const head = Buffer.alloc(12);
  head.writeUInt32LE(IMG_SERVICE_MAGIC, 0);
  head.writeUInt32LE(STATS_MAGIC, 4);
  head.writeUInt32LE(entry.length, 8);
  return Buffer.concat([head, entry]);
}
