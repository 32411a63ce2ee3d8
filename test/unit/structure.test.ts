// The code's structure, read with TypeScript's parser: no non-null assertion (`x!`) and no
// `as any` in src/migration/, and no import cycle among src/'s modules.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import ts from 'typescript';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../..');

/** Every .ts file under dir (recursively), as absolute paths, sorted. */
export function tsFiles(dir: string): string[] {
  const out: string[] = [];
  for (const e of fs.readdirSync(dir, { withFileTypes: true })) {
    const p = path.join(dir, e.name);
    if (e.isDirectory()) out.push(...tsFiles(p));
    else if (e.isFile() && e.name.endsWith('.ts')) out.push(p);
  }
  return out.sort();
}

function parse(file: string): ts.SourceFile {
  return ts.createSourceFile(file, fs.readFileSync(file, 'utf8'), ts.ScriptTarget.Latest, true, ts.ScriptKind.TS);
}

function walk(node: ts.Node, visit: (n: ts.Node) => void): void {
  visit(node);
  ts.forEachChild(node, (child) => walk(child, visit));
}

export interface UnsafeAssertion {
  kind: 'non-null' | 'as any';
  /** Relative to root. */
  file: string;
  line: number;
}

/** The non-null assertions (`x!`) and `as any` casts in files. */
export function unsafeAssertions(files: string[], root = ROOT): UnsafeAssertion[] {
  const found: UnsafeAssertion[] = [];
  for (const file of files) {
    const sf = parse(file);
    const at = (kind: UnsafeAssertion['kind'], pos: number) =>
      found.push({ kind, file: path.relative(root, file), line: sf.getLineAndCharacterOfPosition(pos).line + 1 });
    walk(sf, (n) => {
      // The line of the `!` itself (node.end - 1), not of the start of a long expression.
      if (ts.isNonNullExpression(n)) at('non-null', n.end - 1);
      else if (ts.isAsExpression(n) && n.type.kind === ts.SyntaxKind.AnyKeyword) at('as any', n.type.getStart(sf));
    });
  }
  return found;
}

/** The relative module specifiers a file names: `import ... from`, `import type`, `export ... from`, and `import('...')` types. */
function specifiers(sf: ts.SourceFile): string[] {
  const out: string[] = [];
  walk(sf, (n) => {
    if (
      (ts.isImportDeclaration(n) || ts.isExportDeclaration(n)) &&
      n.moduleSpecifier &&
      ts.isStringLiteral(n.moduleSpecifier)
    ) {
      out.push(n.moduleSpecifier.text);
    } else if (ts.isImportTypeNode(n) && ts.isLiteralTypeNode(n.argument) && ts.isStringLiteral(n.argument.literal)) {
      out.push(n.argument.literal.text);
    }
  });
  return out.filter((s) => s.startsWith('./') || s.startsWith('../'));
}

/** './x.js' (as written in NodeNext ESM) to the x.ts beside it; undefined for anything else. */
function resolveTs(from: string, spec: string): string | undefined {
  const p = path.resolve(path.dirname(from), spec);
  for (const c of [p.replace(/\.(m|c)?js$/, '.$1ts'), p, `${p}.ts`]) {
    if (c.endsWith('.ts') && fs.existsSync(c) && fs.statSync(c).isFile()) return c;
  }
  return undefined;
}

/** The import graph of files: each file (relative to root) to the files among them it imports, sorted. */
export function importGraph(files: string[], root = ROOT): Map<string, string[]> {
  const known = new Set(files);
  const graph = new Map<string, string[]>();
  for (const file of files) {
    const to = new Set<string>();
    for (const spec of specifiers(parse(file))) {
      const target = resolveTs(file, spec);
      if (target && known.has(target)) to.add(path.relative(root, target));
    }
    graph.set(path.relative(root, file), [...to].sort());
  }
  return graph;
}

const CYCLES_LISTED = 100;

/**
 * The elementary cycles of graph, each as a path that starts and ends at its first file in sort
 * order (every cycle once), at most limit of them. Searched within each strongly connected component.
 */
export function importCycles(graph: Map<string, string[]>, limit = CYCLES_LISTED): string[][] {
  const nodes = [...graph.keys()].sort();
  const order = new Map(nodes.map((n, i) => [n, i]));
  // Tarjan's strongly connected components.
  const component = new Map<string, number>();
  const index = new Map<string, number>();
  const low = new Map<string, number>();
  const stack: string[] = [];
  const onStack = new Set<string>();
  let next = 0;
  const connect = (u: string) => {
    index.set(u, next);
    low.set(u, next);
    next++;
    stack.push(u);
    onStack.add(u);
    for (const v of graph.get(u) ?? []) {
      if (!index.has(v)) {
        connect(v);
        low.set(u, Math.min(low.get(u) as number, low.get(v) as number));
      } else if (onStack.has(v)) low.set(u, Math.min(low.get(u) as number, index.get(v) as number));
    }
    if (low.get(u) === index.get(u)) {
      for (;;) {
        const w = stack.pop() as string;
        onStack.delete(w);
        component.set(w, index.get(u) as number);
        if (w === u) break;
      }
    }
  };
  for (const n of nodes) if (!index.has(n)) connect(n);
  // From each start, the paths back to it through later nodes of its component.
  const cycles: string[][] = [];
  for (const start of nodes) {
    const path = [start];
    const onPath = new Set(path);
    const extend = (u: string) => {
      for (const v of graph.get(u) ?? []) {
        if (cycles.length >= limit) return;
        if (v === start) cycles.push([...path, start]);
        else if (
          !onPath.has(v) &&
          component.get(v) === component.get(start) &&
          (order.get(v) as number) > (order.get(start) as number)
        ) {
          path.push(v);
          onPath.add(v);
          extend(v);
          path.pop();
          onPath.delete(v);
        }
      }
    };
    extend(start);
  }
  return cycles;
}

test('src/migration/ has no non-null assertion (x!) and no `as any`', () => {
  const found = unsafeAssertions(tsFiles(path.join(ROOT, 'src/migration')));
  const nonNull = found.filter((f) => f.kind === 'non-null');
  const asAny = found.filter((f) => f.kind === 'as any');
  assert.ok(
    found.length === 0,
    `${nonNull.length} non-null assertion(s) and ${asAny.length} \`as any\` in src/migration/:\n` +
      found.map((f) => `  ${f.file}:${f.line}  ${f.kind}`).join('\n'),
  );
});

test('no import cycle among the modules of src/', () => {
  const graph = importGraph(tsFiles(path.join(ROOT, 'src')));
  assert.ok(graph.size > 0, 'no .ts file found under src/');
  const cycles = importCycles(graph);
  assert.ok(
    cycles.length === 0,
    `${cycles.length < CYCLES_LISTED ? cycles.length : `at least ${CYCLES_LISTED}`} import cycle(s) among src/'s ${graph.size} modules:\n` +
      cycles.map((c) => `  ${c.join(' → ')}`).join('\n'),
  );
});

test('the scanners find what they look for', () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'structure-'));
  try {
    const w = (name: string, text: string) => {
      fs.mkdirSync(path.dirname(path.join(dir, name)), { recursive: true });
      fs.writeFileSync(path.join(dir, name), text);
    };
    w(
      'a.ts',
      "import { b } from './b.js';\nexport const a = (x?: string) => x!.length + (b as any);\nlet d!: number;\n",
    );
    w('b.ts', "import type { C } from './sub/c.js';\nexport const b = 1;\nexport type B = C;\n");
    w('sub/c.ts', "export type C = import('../a.js').A;\nexport * from '../d.js';\n");
    w('d.ts', "import fs from 'node:fs';\nexport const d = (<any>fs) as unknown;\n");
    const files = tsFiles(dir);
    assert.deepEqual(
      unsafeAssertions(files, dir).map((f) => `${f.file}:${f.line} ${f.kind}`),
      ['a.ts:2 non-null', 'a.ts:2 as any'],
    );
    const graph = importGraph(files, dir);
    assert.deepEqual(Object.fromEntries(graph), {
      'a.ts': ['b.ts'],
      'b.ts': ['sub/c.ts'],
      'd.ts': [],
      'sub/c.ts': ['a.ts', 'd.ts'],
    });
    assert.deepEqual(importCycles(graph), [['a.ts', 'b.ts', 'sub/c.ts', 'a.ts']]);
    graph.set('d.ts', ['d.ts']);
    assert.deepEqual(importCycles(graph), [
      ['a.ts', 'b.ts', 'sub/c.ts', 'a.ts'],
      ['d.ts', 'd.ts'],
    ]);
    graph.set('b.ts', ['a.ts', 'sub/c.ts']);
    assert.deepEqual(importCycles(graph), [
      ['a.ts', 'b.ts', 'a.ts'],
      ['a.ts', 'b.ts', 'sub/c.ts', 'a.ts'],
      ['d.ts', 'd.ts'],
    ]);
    assert.equal(importCycles(graph, 2).length, 2);
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});
