package bench

import (
	"fmt"
	"html/template"
	"math"
	"strconv"
	"strings"
)

// Charts are inline SVG that any browser shows without scripts or assets:
// a title, a legend where there is more than one series, axes with ticks at
// round values and their units, and gridlines. Marks are drawn in value
// coordinates; a frame maps them onto its plot area.

const chartW, chartH = 760.0, 300.0

// Colours of the marks; text and axes are styled by the page.
const (
	colourMain   = "#2563eb" // a single series, and p50
	colourLight  = "#93c5fd" // p99 bars
	colourSecond = "#ea580c" // a second line: p99 over time
	colourTarget = "#dc2626"
	colourGrey   = "#6b7280"
)

// scale maps one axis's values onto [0, 1].
type scale struct {
	lo, hi float64
	log    bool
	ticks  []float64 // labelled, with a gridline
	minor  []float64 // a gridline only
	unit   string    // the axis title
	label  func(float64) string
}

func (s scale) at(v float64) float64 {
	if s.log {
		return (math.Log10(v) - math.Log10(s.lo)) / (math.Log10(s.hi) - math.Log10(s.lo))
	}
	return (v - s.lo) / (s.hi - s.lo)
}

// linearScale runs from 0 to a round value at or above top, with five or
// so ticks at multiples of 1, 2, 2.5 or 5 times a power of ten.
func linearScale(top float64, unit string, label func(float64) string) scale {
	if !(top > 0) {
		top = 1
	}
	step := 0.0
	p := math.Pow(10, math.Floor(math.Log10(top/5)))
	for _, m := range []float64{1, 2, 2.5, 5, 10} {
		if step = m * p; step*5 >= top*(1-1e-9) {
			break
		}
	}
	s := scale{unit: unit, label: label}
	n := int(math.Ceil(top/step - 1e-9))
	for i := range n + 1 {
		s.ticks = append(s.ticks, roundFloat(float64(i)*step))
	}
	s.hi = s.ticks[n]
	return s
}

// timeScale runs from 0 to the end of a run, in seconds, with ticks at
// round values.
func timeScale(seconds float64) scale {
	s := linearScale(seconds, "seconds since the first request", plainLabel)
	if seconds > 0 {
		s.hi = seconds
		for len(s.ticks) > 1 && s.ticks[len(s.ticks)-1] > seconds {
			s.ticks = s.ticks[:len(s.ticks)-1]
		}
	}
	return s
}

// logScale runs from the power of ten at or below lo to the one at or
// above hi, with ticks at 1, 2 and 5 times each power of ten; across more
// than three decades, 2 and 5 are gridlines without labels.
func logScale(lo, hi float64, unit string, label func(float64) string) scale {
	lo, hi = math.Max(lo, 1e-3), math.Max(hi, 1e-3)
	d0, d1 := math.Floor(math.Log10(lo)), math.Ceil(math.Log10(hi))
	if d1 == d0 {
		d1++
	}
	s := scale{lo: math.Pow(10, d0), hi: math.Pow(10, d1), log: true, unit: unit, label: label}
	for d := d0; d <= d1; d++ {
		for _, m := range []float64{1, 2, 5} {
			v := roundFloat(m * math.Pow(10, d))
			switch {
			case v > s.hi:
			case m == 1 || d1-d0 <= 3:
				s.ticks = append(s.ticks, v)
			default:
				s.minor = append(s.minor, v)
			}
		}
	}
	return s
}

// roundFloat drops the error that arithmetic left in a round value.
func roundFloat(v float64) float64 {
	r, _ := strconv.ParseFloat(strconv.FormatFloat(v, 'g', 10, 64), 64)
	return r
}

// plainLabel writes a value as it is: 0.5, 20, 1500.
func plainLabel(v float64) string { return strconv.FormatFloat(roundFloat(v), 'f', -1, 64) }

// siLabel writes a value to three significant digits, thousands as k and
// millions as M: 297k, 1.5M.
func siLabel(v float64) string {
	if v != 0 {
		p := math.Pow(10, math.Floor(math.Log10(math.Abs(v)))-2)
		v = math.Round(v/p) * p
	}
	switch a := math.Abs(v); {
	case a >= 1e6:
		return plainLabel(v/1e6) + "M"
	case a >= 1e3:
		return plainLabel(v/1e3) + "k"
	}
	return plainLabel(v)
}

// msLabel writes a latency in milliseconds with two significant digits.
func msLabel(ms float64) string {
	if ms >= 10 {
		return fmt.Sprintf("%.0f ms", ms)
	}
	return strconv.FormatFloat(ms, 'g', 2, 64) + " ms"
}

// legendEntry names a series by its colour and stroke.
type legendEntry struct {
	label, colour string
	dashed        bool
}

// frame is a chart being drawn.
type frame struct {
	title  string
	x, y   scale
	left   float64 // room for the y axis's labels
	legend []legendEntry
	marks  strings.Builder
}

const chartTop, chartRight, chartBottom = 44.0, 24.0, 46.0

func newFrame(title string, x, y scale) *frame {
	return &frame{title: title, x: x, y: y, left: 64}
}

func (f *frame) px(v float64) float64 { return f.left + f.x.at(v)*(chartW-f.left-chartRight) }
func (f *frame) py(v float64) float64 {
	return chartH - chartBottom - f.y.at(v)*(chartH-chartTop-chartBottom)
}

// line draws a polyline through the points with positive y, broken where
// y is not, with a marker at each point when there are few.
func (f *frame) line(xs, ys []float64, colour string) {
	var pts []string
	flush := func() {
		if len(pts) > 1 {
			fmt.Fprintf(&f.marks, `<polyline fill="none" stroke="%s" stroke-width="2" stroke-linejoin="round" points="%s"/>`,
				colour, strings.Join(pts, " "))
		}
		pts = pts[:0]
	}
	for i, y := range ys {
		if y <= 0 && f.y.log || math.IsNaN(y) {
			flush()
			continue
		}
		pts = append(pts, fmt.Sprintf("%.1f,%.1f", f.px(xs[i]), f.py(y)))
		if len(ys) <= 40 {
			fmt.Fprintf(&f.marks, `<circle cx="%.1f" cy="%.1f" r="3" fill="%s"/>`, f.px(xs[i]), f.py(y), colour)
		}
	}
	flush()
}

// area fills under a line down to the x axis.
func (f *frame) area(xs, ys []float64, colour string) {
	if len(xs) < 2 {
		return
	}
	var b strings.Builder
	fmt.Fprintf(&b, "%.1f,%.1f", f.px(xs[0]), f.py(f.y.lo))
	for i := range xs {
		fmt.Fprintf(&b, " %.1f,%.1f", f.px(xs[i]), f.py(ys[i]))
	}
	fmt.Fprintf(&b, " %.1f,%.1f", f.px(xs[len(xs)-1]), f.py(f.y.lo))
	fmt.Fprintf(&f.marks, `<polygon fill="%s" fill-opacity="0.12" points="%s"/>`, colour, b.String())
}

// rect fills the box between two x and two y values, titled for a tooltip.
func (f *frame) rect(x0, x1, y0, y1 float64, colour, title string) {
	left, right, top, bottom := f.px(x0), f.px(x1), f.py(y1), f.py(y0)
	fmt.Fprintf(&f.marks, `<rect x="%.1f" y="%.1f" width="%.1f" height="%.1f" fill="%s"><title>%s</title></rect>`,
		left, top, math.Max(right-left, 0), math.Max(bottom-top, 0), colour, template.HTMLEscapeString(title))
}

// vline draws a vertical line at x between two y values.
func (f *frame) vline(x, y0, y1 float64, colour string, dashed bool) {
	dash := ""
	if dashed {
		dash = ` stroke-dasharray="5 3"`
	}
	fmt.Fprintf(&f.marks, `<line x1="%.1f" y1="%.1f" x2="%.1f" y2="%.1f" stroke="%s" stroke-width="1.5"%s/>`,
		f.px(x), f.py(y0), f.px(x), f.py(y1), colour, dash)
}

// hline draws a horizontal dashed line across the plot at y.
func (f *frame) hline(y float64, colour string) {
	fmt.Fprintf(&f.marks, `<line x1="%.1f" y1="%.1f" x2="%.1f" y2="%.1f" stroke="%s" stroke-width="1.5" stroke-dasharray="5 3"/>`,
		f.px(f.x.lo), f.py(y), f.px(f.x.hi), f.py(y), colour)
}

// text writes a label at a point in value coordinates.
func (f *frame) text(x, y float64, dx, dy float64, anchor, s string) {
	fmt.Fprintf(&f.marks, `<text x="%.1f" y="%.1f" text-anchor="%s">%s</text>`,
		f.px(x)+dx, f.py(y)+dy, anchor, template.HTMLEscapeString(s))
}

// svg returns the chart: gridlines and ticks under the marks, axes over.
func (f *frame) svg() template.HTML {
	var b strings.Builder
	esc := template.HTMLEscapeString
	fmt.Fprintf(&b, `<svg class="chart" viewBox="0 0 %.0f %.0f" role="img" aria-label="%s" xmlns="http://www.w3.org/2000/svg">`,
		chartW, chartH, esc(f.title))
	fmt.Fprintf(&b, `<text class="title" x="%.0f" y="20">%s</text>`, f.left, esc(f.title))
	if len(f.legend) > 1 || len(f.legend) == 1 && f.legend[0].dashed {
		// One text, so that the browser spaces the entries: each a stroke
		// drawn in box-drawing characters, then its label.
		fmt.Fprintf(&b, `<text x="%.0f" y="20" text-anchor="end">`, chartW-chartRight)
		for i, e := range f.legend {
			stroke := "━━"
			if e.dashed {
				stroke = "╍╍"
			}
			dx := 0
			if i > 0 {
				dx = 16
			}
			fmt.Fprintf(&b, `<tspan dx="%d" fill="%s">%s</tspan> %s`, dx, e.colour, stroke, esc(e.label))
		}
		b.WriteString(`</text>`)
	}
	x0, x1, y0, y1 := f.left, chartW-chartRight, chartH-chartBottom, chartTop
	for _, v := range f.y.minor {
		fmt.Fprintf(&b, `<line class="grid minor" x1="%.1f" y1="%.1f" x2="%.1f" y2="%.1f"/>`, x0, f.py(v), x1, f.py(v))
	}
	for _, v := range f.x.minor {
		fmt.Fprintf(&b, `<line class="grid minor" x1="%.1f" y1="%.1f" x2="%.1f" y2="%.1f"/>`, f.px(v), y0, f.px(v), y1)
	}
	for _, v := range f.y.ticks {
		fmt.Fprintf(&b, `<line class="grid" x1="%.1f" y1="%.1f" x2="%.1f" y2="%.1f"/>`, x0, f.py(v), x1, f.py(v))
		fmt.Fprintf(&b, `<text x="%.1f" y="%.1f" text-anchor="end">%s</text>`, x0-6, f.py(v)+4, esc(f.y.label(v)))
	}
	for _, v := range f.x.ticks {
		fmt.Fprintf(&b, `<line class="grid" x1="%.1f" y1="%.1f" x2="%.1f" y2="%.1f"/>`, f.px(v), y0, f.px(v), y1)
		fmt.Fprintf(&b, `<line class="axis" x1="%.1f" y1="%.1f" x2="%.1f" y2="%.1f"/>`, f.px(v), y0, f.px(v), y0+4)
		fmt.Fprintf(&b, `<text x="%.1f" y="%.1f" text-anchor="middle">%s</text>`, f.px(v), y0+17, esc(f.x.label(v)))
	}
	b.WriteString(f.marks.String())
	fmt.Fprintf(&b, `<line class="axis" x1="%.1f" y1="%.1f" x2="%.1f" y2="%.1f"/>`, x0, y0, x1, y0)
	fmt.Fprintf(&b, `<line class="axis" x1="%.1f" y1="%.1f" x2="%.1f" y2="%.1f"/>`, x0, y0, x0, y1)
	fmt.Fprintf(&b, `<text class="unit" x="%.1f" y="%.1f" text-anchor="middle">%s</text>`, (x0+x1)/2, chartH-8, esc(f.x.unit))
	if f.y.unit != "" {
		fmt.Fprintf(&b, `<text class="unit" transform="translate(14 %.1f) rotate(-90)" text-anchor="middle">%s</text>`,
			(y0+y1)/2, esc(f.y.unit))
	}
	b.WriteString(`</svg>`)
	return template.HTML(b.String())
}
