package analysis

import (
	"flag"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"

	commonpb "go.opentelemetry.io/proto/otlp/common/v1"
	tracepb "go.opentelemetry.io/proto/otlp/trace/v1"
)

var kinds = []tracepb.Span_SpanKind{kindServer, kindClient, tracepb.Span_SPAN_KIND_INTERNAL,
	tracepb.Span_SPAN_KIND_PRODUCER, tracepb.Span_SPAN_KIND_CONSUMER}

var update = flag.Bool("update", false, "rewrite the golden files of testdata")

// TestCriticalPathGolden computes the critical path of each
// testdata/criticalpath/*.trace and compares it with the .golden file beside
// it.
func TestCriticalPathGolden(t *testing.T) {
	traces, err := filepath.Glob("testdata/criticalpath/*.trace")
	if err != nil || len(traces) == 0 {
		t.Fatalf("no traces: %v", err)
	}
	for _, path := range traces {
		t.Run(strings.TrimSuffix(filepath.Base(path), ".trace"), func(t *testing.T) {
			tr, _, err := readTrace(path)
			if err != nil {
				t.Fatal(err)
			}
			p := CriticalPath(tr, nil)
			checkTiles(t, tr, p)
			golden(t, strings.TrimSuffix(path, ".trace")+".golden", formatPath(tr, p))
		})
	}
}

func golden(t *testing.T, path, got string) {
	t.Helper()
	if *update {
		if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if got != string(want) {
		t.Errorf("got\n%s\nwant\n%s", got, want)
	}
}

// formatPath writes a path with times in milliseconds from the root's start.
func formatPath(tr *Trace, p Path) string {
	var b strings.Builder
	if p.Root < 0 {
		return "no root\n"
	}
	label := func(i int) string { return strings.TrimRight(string(tr.Spans[i].ID[:]), "\x00") }
	ms := func(t uint64) string { return fmt.Sprintf("%8.3f", float64(t-p.Start)/1e6) }
	fmt.Fprintf(&b, "root %s %s..%s\n", label(p.Root), ms(p.Start), ms(p.End))
	for _, s := range p.Segments {
		sp := &tr.Spans[s.Span]
		fmt.Fprintf(&b, "%s %s  %-6s %s: %s\n", ms(s.Start), ms(s.End), label(s.Span), sp.Service, sp.Name)
	}
	for _, o := range p.Operations {
		fmt.Fprintf(&b, "self %8.3f ms %5.1f%%  %s: %s\n", float64(o.Self)/1e6, 100*o.Share, o.Service, o.Operation)
	}
	return b.String()
}

// checkTiles checks that p's segments tile the root's interval exactly,
// each attributed to a span placed on the root's tree over all of it, and
// that the operations sum them up.
func checkTiles(t *testing.T, tr *Trace, p Path) {
	t.Helper()
	if p.Root < 0 {
		if len(tr.Spans) > 0 && len(p.Segments) > 0 {
			t.Fatalf("segments without a root")
		}
		return
	}
	placed := buildTree(tr, (*Options)(nil).EnsureDefaults(), int32(p.Root))
	at := p.Start
	for i, s := range p.Segments {
		if s.Start != at || s.End <= s.Start {
			t.Fatalf("segment %d [%d, %d] does not follow the one before, which ends at %d", i, s.Start, s.End, at)
		}
		n := &placed.nodes[s.Span]
		if !n.placed || s.Start < n.start || s.End > n.end {
			t.Fatalf("segment %d [%d, %d] is attributed to span %d, placed %v over [%d, %d]", i, s.Start, s.End, s.Span, n.placed, n.start, n.end)
		}
		at = s.End
	}
	if at != p.End && p.End > p.Start {
		t.Fatalf("segments end at %d, the root at %d", at, p.End)
	}
	var sum uint64
	for _, o := range p.Operations {
		sum += o.Self
	}
	if sum != p.End-p.Start {
		t.Fatalf("operations sum up to %d ns of the root's %d", sum, p.End-p.Start)
	}
}

// TestCriticalPathTiles checks on random traces, skewed, concurrent, with
// orphans, async children and several roots, that the path tiles the root
// exactly with spans active where they are on it, from the root or from
// any span.
func TestCriticalPathTiles(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	for range 2000 {
		tr := randomTrace(rng, 1+rng.IntN(40))
		checkTiles(t, tr, CriticalPath(tr, nil))
		checkTiles(t, tr, CriticalPathFrom(tr, rng.IntN(len(tr.Spans)), nil))
	}
}

// TestDeepestHolding checks on random trees that the span an orphan would
// be adopted by is as deep as the deepest placed span holding its
// interval, found by walking every placed span.
func TestDeepestHolding(t *testing.T) {
	rng := rand.New(rand.NewPCG(5, 6))
	for range 500 {
		tr := buildTree(randomTrace(rng, 1+rng.IntN(60)), (*Options)(nil).EnsureDefaults(), -1)
		if tr.root < 0 {
			continue
		}
		depth := make([]int, len(tr.nodes))
		var walk func(n int32)
		walk = func(n int32) {
			for _, c := range tr.nodes[n].children {
				depth[c] = depth[n] + 1
				walk(c)
			}
		}
		walk(int32(tr.root))
		for range 20 {
			rn := &tr.nodes[tr.root]
			start := rn.start + rng.Uint64N(rn.end-rn.start+1)
			end := start + rng.Uint64N(rn.end-start+1)
			want := 0
			for i := range tr.nodes {
				if n := &tr.nodes[i]; n.placed && n.start <= start && end <= n.end {
					want = max(want, depth[i])
				}
			}
			got := tr.deepestHolding(int32(tr.root), start, end)
			if n := &tr.nodes[got]; depth[got] != want || n.start > start || end > n.end {
				t.Fatalf("[%d, %d]: span %d at depth %d over [%d, %d], want depth %d", start, end, got, depth[got], n.start, n.end, want)
			}
		}
	}
}

// TestDeepestHoldingRuns checks on random trees of long runs of nested
// calls, with spans whose parent is missing among them, that the span
// an orphan would be adopted by is the one a walk of every holding span,
// depth first, finds.
func TestDeepestHoldingRuns(t *testing.T) {
	rng := rand.New(rand.NewPCG(7, 8))
	for range 300 {
		n := 20 + rng.IntN(400)
		tr := &Trace{Resources: make([][]*commonpb.KeyValue, 2)}
		for i := range n {
			s := Span{Service: "svc", Name: "op", Resource: rng.IntN(2), Kind: kinds[rng.IntN(len(kinds))]}
			s.ID[0], s.ID[1] = byte(i>>8)+1, byte(i)
			s.Start, s.End = 0, 1_000_000
			if i > 0 {
				p := &tr.Spans[i-1] // a recursion, mostly
				if rng.IntN(5) == 0 {
					p = &tr.Spans[rng.IntN(i)]
				}
				s.Parent = p.ID
				s.Start = p.Start + rng.Uint64N((p.End-p.Start)/8+1)
				s.End = p.End - rng.Uint64N((p.End-p.Start)/8+1)
				if rng.IntN(6) == 0 {
					s.Parent[0] = 0xff // lost, and found a place by its times
					s.End = s.Start + rng.Uint64N(s.End-s.Start+1)
				}
			}
			tr.Spans = append(tr.Spans, s)
		}
		tree := buildTree(tr, (*Options)(nil).EnsureDefaults(), -1)
		if tree.root < 0 {
			continue
		}
		rn := &tree.nodes[tree.root]
		for range 30 {
			start := rn.start + rng.Uint64N(rn.end-rn.start+1)
			end := start + rng.Uint64N((rn.end-start)/4+1)
			want := walkDeepestHolding(tree, int32(tree.root), start, end)
			if got := tree.deepestHolding(int32(tree.root), start, end); got != want {
				t.Fatalf("%d spans, [%d, %d]: span %d, want %d", n, start, end, got, want)
			}
		}
	}
}

// walkDeepestHolding is deepestHolding walking every run down span by
// span.
func walkDeepestHolding(tr *tree, n int32, start, end uint64) int32 {
	best, bestDepth := n, 0
	holds := func(c int32) bool { cn := &tr.nodes[c]; return cn.start <= start && end <= cn.end }
	var search func(n int32, depth int)
	search = func(n int32, depth int) {
		nd := &tr.nodes[n]
		for _, c := range nd.inner {
			if depth+int(nd.height) <= bestDepth {
				return
			}
			if depth+1+int(tr.nodes[c].height) > bestDepth && holds(c) {
				search(c, depth+1)
			}
		}
		if depth+1 <= bestDepth {
			return
		}
		if c := tr.holdingChild(n, start, end); c >= 0 {
			best, bestDepth = c, depth+1
		}
	}
	search(n, 0)
	return best
}

// TestChildGaps checks on random trees the gap after each child that
// childGaps finds against a walk over every other child.
func TestChildGaps(t *testing.T) {
	rng := rand.New(rand.NewPCG(7, 8))
	for range 500 {
		tr := buildTree(randomTrace(rng, 1+rng.IntN(60)), (*Options)(nil).EnsureDefaults(), -1)
		for w := range tr.nodes {
			wn := &tr.nodes[w]
			if !wn.placed || len(wn.children) == 0 {
				continue
			}
			g := tr.newChildGaps(int32(w))
			for _, p := range wn.children {
				pn := &tr.nodes[p]
				wantEnd, wantIdle := wn.end, true
				for _, x := range wn.children {
					switch xn := &tr.nodes[x]; {
					case x == p:
					case xn.start >= pn.end:
						wantEnd = min(wantEnd, xn.start)
					case xn.end > pn.end:
						wantIdle = false
					}
				}
				if end, idle := g.after(p); end != wantEnd || idle != wantIdle {
					t.Fatalf("gap after child %d [%d, %d]: ends %d, idle %v; want %d, %v", p, pn.start, pn.end, end, idle, wantEnd, wantIdle)
				}
			}
		}
	}
}

func randomTrace(rng *rand.Rand, n int) *Trace {
	tr := &Trace{Resources: make([][]*commonpb.KeyValue, 3)}
	for i := range n {
		s := Span{Service: fmt.Sprint("svc", rng.IntN(3)), Name: fmt.Sprint("op", rng.IntN(4)), Resource: rng.IntN(3)}
		s.ID[0], s.ID[1] = byte(i>>8)+1, byte(i)
		switch r := rng.IntN(10); {
		case i == 0 || r == 0: // another root
		case r == 1: // an orphan
			s.Parent[0] = 0xff
		case r == 2: // the next span, which may close a cycle
			s.Parent[0], s.Parent[1] = byte((i+1)>>8)+1, byte(i+1)
		default:
			p := tr.Spans[rng.IntN(i)]
			s.Parent = p.ID
		}
		s.Kind = kinds[rng.IntN(len(kinds))]
		s.Start = uint64(rng.IntN(1000))
		s.End = s.Start + uint64(rng.IntN(500))
		if rng.IntN(20) == 0 {
			s.End = s.Start // zero length
		}
		tr.Spans = append(tr.Spans, s)
	}
	return tr
}
