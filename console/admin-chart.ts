import UPlot from 'uplot'
import 'uplot/dist/uPlot.min.css'

const KEEP_POINTS = 60
const COLORS = ['#1f5fbf', '#17803d', '#a15c00', '#b42318', '#6b3fa0', '#0e7490']

function clock (seconds: number): string {
  return new Date(seconds * 1000).toLocaleTimeString([], { hour12: false })
}

/**
 * A live uPlot chart of one figure with a line per instance. uPlot fixes its
 * series at construction, so a new or vanished instance rebuilds the plot
 * (the kept points carry over).
 */
export class InstanceChart {
  private readonly xs: number[] = []
  private readonly values = new Map<string, Array<number | null>>()
  private plot: UPlot | null = null
  private ids: string[] = []

  constructor (private readonly container: HTMLElement, private readonly unit: string) {
    new ResizeObserver(() => this.plot?.setSize(this.size())).observe(container)
  }

  push (figures: Map<string, number>, at = Date.now()): void {
    this.xs.push(at / 1000)
    for (const id of figures.keys()) if (!this.values.has(id)) this.values.set(id, new Array<number | null>(this.xs.length - 1).fill(null))
    for (const [id, series] of this.values) series.push(figures.get(id) ?? null)
    if (this.xs.length > KEEP_POINTS) {
      this.xs.shift()
      for (const series of this.values.values()) series.shift()
    }
    for (const [id, series] of this.values) if (series.every(v => v === null)) this.values.delete(id)
    const ids = [...this.values.keys()].sort()
    if (ids.join() !== this.ids.join()) this.build(ids)
    this.plot?.setData(this.data())
  }

  private size (): { width: number, height: number } {
    return { width: Math.max(240, this.container.clientWidth), height: 150 }
  }

  private data (): UPlot.AlignedData {
    return [this.xs, ...this.ids.map(id => this.values.get(id) ?? [])] as UPlot.AlignedData
  }

  private build (ids: string[]): void {
    this.plot?.destroy()
    this.ids = ids
    this.plot = new UPlot({
      ...this.size(),
      legend: { show: true },
      scales: { x: { time: true }, y: { range: (_u, _min, max) => [0, Math.max(1, Math.ceil((max ?? 0) * 1.2))] } },
      series: [{}, ...ids.map((id, i) => ({ label: `${id.slice(0, 8)} ${this.unit}`, stroke: COLORS[i % COLORS.length], width: 2, spanGaps: false }))],
      axes: [{ space: 70, values: (_u, splits) => splits.map(clock) }, { size: 45 }]
    }, this.data(), this.container)
  }
}
