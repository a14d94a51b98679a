import UPlot from 'uplot'
import 'uplot/dist/uPlot.min.css'

const KEEP_POINTS = 60

function clock (seconds: number): string {
  return new Date(seconds * 1000).toLocaleTimeString([], { hour12: false })
}

/** A small live chart of frames in/out per second (uPlot: time series on canvas, ~50 KB). */
export class RateChart {
  private readonly xs: number[] = []
  private readonly ins: number[] = []
  private readonly outs: number[] = []
  private readonly plot: UPlot

  constructor (private readonly container: HTMLElement) {
    this.plot = new UPlot({
      width: Math.max(240, container.clientWidth),
      height: 160,
      legend: { show: true },
      cursor: { show: true },
      scales: { x: { time: true }, y: { range: (_u, _min, max) => [0, Math.max(5, Math.ceil(max * 1.2))] } },
      series: [
        {},
        { label: 'in / s', stroke: '#1f5fbf', width: 2 },
        { label: 'out / s', stroke: '#17803d', width: 2 }
      ],
      axes: [
        { space: 70, incrs: [5, 10, 15, 30, 60, 120, 300], values: (_u, splits) => splits.map(clock) },
        { size: 40 }
      ]
    }, [this.xs, this.ins, this.outs], container)
    new ResizeObserver(() => this.plot.setSize({ width: Math.max(240, container.clientWidth), height: 160 })).observe(container)
  }

  push (inPerSecond: number, outPerSecond: number, at = Date.now()): void {
    this.xs.push(at / 1000)
    this.ins.push(inPerSecond)
    this.outs.push(outPerSecond)
    if (this.xs.length > KEEP_POINTS) {
      this.xs.shift()
      this.ins.shift()
      this.outs.shift()
    }
    this.plot.setData([this.xs, this.ins, this.outs])
  }
}
