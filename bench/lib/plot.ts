// PNG plots of benchmark series through gnuplot (Debian's gnuplot-nox): median points with
// min-max error bars, one line per method.
import { execa } from 'execa';
import fs from 'node:fs';
import path from 'node:path';
import { summarize } from './stats.js';

export interface Series {
  title: string;
  /** x value -> the runs measured there. */
  points: Array<{ x: number; values: number[] }>;
}

export interface PlotSpec {
  file: string;
  title: string;
  xlabel: string;
  ylabel: string;
  series: Series[];
  logx?: boolean;
  logy?: boolean;
}

/** Writes PLOT.png and PLOT.dat beside it (the data gnuplot drew). */
export async function plot(spec: PlotSpec): Promise<void> {
  const dat = spec.file.replace(/\.png$/, '.dat');
  let data = '';
  spec.series.forEach((s, i) => {
    data += `# ${i}: ${s.title}\n# x median min max runs\n`;
    for (const p of s.points) {
      const m = summarize(p.values);
      if (m.n) data += `${p.x} ${m.median} ${m.min} ${m.max} ${m.n}\n`;
    }
    data += '\n\n';
  });
  fs.mkdirSync(path.dirname(spec.file), { recursive: true });
  fs.writeFileSync(dat, data);
  const q = (s: string) => `"${s.replace(/"/g, '\\"')}"`;
  const lines = [
    `set terminal png size 900,560 font ",11"`,
    `set output ${q(spec.file)}`,
    `set title ${q(spec.title)}`,
    `set xlabel ${q(spec.xlabel)}`,
    `set ylabel ${q(spec.ylabel)}`,
    `set key top left`,
    `set grid`,
    spec.logx ? 'set logscale x 2' : '',
    spec.logy ? 'set logscale y' : '',
    'plot ' +
      spec.series.map((s, i) => `${q(dat)} index ${i} using 1:2:3:4 with yerrorlines title ${q(s.title)}`).join(', '),
  ];
  await execa('gnuplot', [], { input: lines.filter(Boolean).join('\n') + '\n' });
}
