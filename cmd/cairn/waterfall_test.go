package main

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	commonpb "go.opentelemetry.io/proto/otlp/common/v1"
	resourcepb "go.opentelemetry.io/proto/otlp/resource/v1"
	tracepb "go.opentelemetry.io/proto/otlp/trace/v1"
)

var update = flag.Bool("update", false, "rewrite the golden files of testdata")

// checkGoldens runs each golden file of dir as a subtest: its first line is
// "$ cairn " followed by command and then args, which print returns the
// output of; the rest of the file is the output expected. With -update,
// the files are rewritten instead.
func checkGoldens(t *testing.T, dir, command string, print func(t *testing.T, args string) string) {
	t.Helper()
	goldens, err := filepath.Glob(filepath.Join(dir, "*.golden"))
	if err != nil || len(goldens) == 0 {
		t.Fatalf("no golden files in %s: %v", dir, err)
	}
	for _, path := range goldens {
		t.Run(strings.TrimSuffix(filepath.Base(path), ".golden"), func(t *testing.T) {
			b, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			first, want, _ := strings.Cut(string(b), "\n")
			args, ok := strings.CutPrefix(first, "$ cairn "+command)
			if !ok {
				t.Fatalf("first line %q is not a cairn %s command", first, command)
			}
			got := print(t, strings.TrimSpace(args))
			if *update {
				if err := os.WriteFile(path, []byte(first+"\n"+got), 0o644); err != nil {
					t.Fatal(err)
				}
				return
			}
			if got != want {
				t.Errorf("%s printed\n%s\nwant\n%s", first, got, want)
			}
		})
	}
}

// TestWaterfallGolden renders each testdata/waterfall/*.golden file's trace
// with the flags its first line gives, "$ cairn trace NAME.trace FLAGS…",
// and compares the output with the rest of the file.
func TestWaterfallGolden(t *testing.T) {
	checkGoldens(t, "testdata/waterfall", "trace", func(t *testing.T, args string) string {
		fs := newFlagSet("trace")
		opts := addWaterfallFlags(fs)
		td := specOf(t, fs, args)
		var got bytes.Buffer
		if err := writeWaterfall(&got, td, *opts); err != nil {
			t.Fatal(err)
		}
		return got.String()
	})
}

// specOf parses args with fs and reads the trace spec of testdata/waterfall
// that the first argument names.
func specOf(t *testing.T, fs *flag.FlagSet, args string) *tracepb.TracesData {
	t.Helper()
	pos, err := parseFlags(fs, strings.Fields(args), io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	td, err := readTraceSpec(filepath.Join("testdata/waterfall", pos[0]))
	if err != nil {
		t.Fatal(err)
	}
	return td
}

// A trace spec describes a trace in a line per span, or per run of alike
// spans, children indented two spaces under their parent:
//
//	SERVICE: NAME | START DURATION [| ×COUNT every STEP] [| error MESSAGE] [| K errors] [| orphan]
//
// Times are in milliseconds, START from the parent's start (the trace's, for
// a root). A line with ×COUNT stands for COUNT spans, STEP apart, each with
// the children indented under it; its DURATION may be a range MIN..MAX,
// spread over them. "K errors" fails K of all the spans a line stands for,
// spread over them; "orphan" gives a root a parent that is not in the trace.
type traceSpec struct {
	service, name   string
	start, min, max float64
	copies          int
	step            float64
	errMessage      string
	errors, emitted int
	total           int // spans the line stands for in the whole trace
	orphan          bool
	children        []*traceSpec
}

func readTraceSpec(path string) (*tracepb.TracesData, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var roots []*traceSpec
	var open []*traceSpec // the last line read at each indentation
	lines := bufio.NewScanner(f)
	for n := 1; lines.Scan(); n++ {
		line := lines.Text()
		if strings.TrimSpace(line) == "" || strings.HasPrefix(line, "#") {
			continue
		}
		body := strings.TrimLeft(line, " ")
		level := (len(line) - len(body)) / 2
		sp, err := parseSpecLine(body)
		if err != nil {
			return nil, fmt.Errorf("%s:%d: %w", path, n, err)
		}
		switch {
		case level == 0:
			roots = append(roots, sp)
		case level <= len(open):
			parent := open[level-1]
			parent.children = append(parent.children, sp)
		default:
			return nil, fmt.Errorf("%s:%d: indented under nothing", path, n)
		}
		open = append(open[:level], sp)
	}
	if err := lines.Err(); err != nil {
		return nil, err
	}
	g := &specGen{services: map[string]*tracepb.ResourceSpans{}, td: &tracepb.TracesData{}}
	for _, r := range roots {
		r.setTotals(1)
		g.emit(r, nil, 1_700_000_000_000_000_000)
	}
	return g.td, nil
}

// setTotals sets how many spans a line and its children stand for, given
// how many spans its parent line stands for.
func (sp *traceSpec) setTotals(parents int) {
	sp.total = parents * sp.copies
	for _, c := range sp.children {
		c.setTotals(sp.total)
	}
}

func parseSpecLine(s string) (*traceSpec, error) {
	fields := strings.Split(s, " | ")
	service, name, ok := strings.Cut(fields[0], ": ")
	if !ok || len(fields) < 2 {
		return nil, fmt.Errorf("%q is not SERVICE: NAME | START DURATION …", s)
	}
	sp := &traceSpec{service: service, name: name, copies: 1}
	var dur string
	if _, err := fmt.Sscanf(fields[1], "%g %s", &sp.start, &dur); err != nil {
		return nil, fmt.Errorf("%q is not START DURATION: %w", fields[1], err)
	}
	lo, hi, isRange := strings.Cut(dur, "..")
	var err error
	if sp.min, err = strconv.ParseFloat(lo, 64); err != nil {
		return nil, err
	}
	sp.max = sp.min
	if isRange {
		if sp.max, err = strconv.ParseFloat(hi, 64); err != nil {
			return nil, err
		}
	}
	for _, f := range fields[2:] {
		switch {
		case strings.HasPrefix(f, "×"):
			_, err = fmt.Sscanf(f, "×%d every %g", &sp.copies, &sp.step)
		case strings.HasPrefix(f, "error "):
			sp.errMessage = strings.TrimPrefix(f, "error ")
		case strings.HasSuffix(f, " errors"):
			sp.errors, err = strconv.Atoi(strings.TrimSuffix(f, " errors"))
		case f == "orphan":
			sp.orphan = true
		default:
			err = fmt.Errorf("unknown field %q", f)
		}
		if err != nil {
			return nil, err
		}
	}
	return sp, nil
}

// specGen turns trace specs into spans, numbering span IDs in order.
type specGen struct {
	td       *tracepb.TracesData
	services map[string]*tracepb.ResourceSpans
	ids      uint64
}

var specTraceID = []byte{0x4b, 0xf9, 0x2f, 0x35, 0x77, 0xb3, 0x4d, 0xa6, 0xa3, 0xce, 0x92, 0x9d, 0x0e, 0x0e, 0x47, 0x36}

func (g *specGen) id() []byte {
	g.ids++
	return binary.BigEndian.AppendUint64(nil, g.ids)
}

func (g *specGen) emit(sp *traceSpec, parent []byte, parentStart uint64) {
	rs, ok := g.services[sp.service]
	if !ok {
		rs = &tracepb.ResourceSpans{
			Resource:   &resourcepb.Resource{Attributes: []*commonpb.KeyValue{str("service.name", sp.service)}},
			ScopeSpans: []*tracepb.ScopeSpans{{}},
		}
		g.services[sp.service] = rs
		g.td.ResourceSpans = append(g.td.ResourceSpans, rs)
	}
	nanos := func(ms float64) uint64 { return uint64(ms*1e6 + 0.5) }
	for i := range sp.copies {
		dur := sp.min
		if sp.copies > 1 {
			dur += (sp.max - sp.min) * float64(i) / float64(sp.copies-1)
		}
		start := parentStart + nanos(sp.start+float64(i)*sp.step)
		s := &tracepb.Span{TraceId: specTraceID, SpanId: g.id(), ParentSpanId: parent, Name: sp.name,
			StartTimeUnixNano: start, EndTimeUnixNano: start + nanos(dur)}
		if sp.orphan {
			s.ParentSpanId = binary.BigEndian.AppendUint64(nil, 0xff00_0000_0000_0000|g.ids)
		}
		// The k-th of n spans fails where k*errors/n steps up.
		k, n := sp.emitted, sp.total
		sp.emitted++
		switch {
		case sp.errMessage != "":
			s.Status = &tracepb.Status{Code: tracepb.Status_STATUS_CODE_ERROR, Message: sp.errMessage}
		case k*sp.errors/n != (k+1)*sp.errors/n:
			s.Status = &tracepb.Status{Code: tracepb.Status_STATUS_CODE_ERROR, Message: "failed"}
		}
		rs.ScopeSpans[0].Spans = append(rs.ScopeSpans[0].Spans, s)
		for _, c := range sp.children {
			g.emit(c, s.SpanId, start)
		}
	}
}

// TestWaterfallParentCycle lists spans whose parent IDs form a cycle, which
// hang from no root, rather than leaving them out.
func TestWaterfallParentCycle(t *testing.T) {
	id := func(n byte) []byte { return []byte{0, 0, 0, 0, 0, 0, 0, n} }
	sp := func(n, parent byte, name string) *tracepb.Span {
		s := &tracepb.Span{TraceId: specTraceID, SpanId: id(n), Name: name, StartTimeUnixNano: uint64(n) * 1e6, EndTimeUnixNano: uint64(n)*1e6 + 5e5}
		if parent != 0 {
			s.ParentSpanId = id(parent)
		}
		return s
	}
	td := &tracepb.TracesData{ResourceSpans: []*tracepb.ResourceSpans{{
		Resource: &resourcepb.Resource{Attributes: []*commonpb.KeyValue{str("service.name", "loop")}},
		// 3 hangs below the cycle of 4 and 5.
		ScopeSpans: []*tracepb.ScopeSpans{{Spans: []*tracepb.Span{sp(1, 0, "root"), sp(2, 1, "child"), sp(3, 4, "below"), sp(4, 5, "a"), sp(5, 4, "b")}}},
	}}}
	var out bytes.Buffer
	if err := writeWaterfall(&out, td, waterfallOptions{collapse: true}); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		"5 spans  1 service  4.500 ms\n",
		"loop: a  ",
		"├─ loop: below",
		"└─ loop: b",
		"(parent 0000000000000005 is below it: a cycle of parent IDs)",
	} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("waterfall lacks %q:\n%s", want, out.String())
		}
	}
}
