package analysis

import (
	"bufio"
	"fmt"
	"os"
	"strings"
	"testing"

	tracepb "go.opentelemetry.io/proto/otlp/trace/v1"
)

func TestNameShapes(t *testing.T) {
	f, err := os.Open("testdata/name-shapes.txt")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for line := 1; sc.Scan(); line++ {
		if sc.Text() == "" || strings.HasPrefix(sc.Text(), "#") {
			continue
		}
		name, want, ok := strings.Cut(sc.Text(), "\t")
		if !ok {
			t.Fatalf("line %d: no tab", line)
		}
		if got := NameShape(name); got != want {
			t.Errorf("line %d: shape of %q is %q, want %q", line, name, got, want)
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
}

// FuzzNameShape checks that a shape is its own shape: no literal is left
// in it to take apart again.
func FuzzNameShape(f *testing.F) {
	for _, s := range []string{"SELECT 1", "IN (1, 2)", "'a''b'", "3fa85f64-5717-4562-b3fc-2c963f66afa6", "v1.2"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, name string) {
		if s := NameShape(name); NameShape(s) != s {
			t.Fatalf("shape of %q is %q, whose shape is %q", name, s, NameShape(s))
		}
	})
}

// literalQuery builds a trace of web's GET /orders, which reads the order
// from the database by its literal ID, one name a trace, for selectMS on
// replica, and then renders it for renderMS.
func literalQuery(id int, selectMS, renderMS float64, replica string) *Trace {
	b := newTrace(id)
	end := 1 + selectMS + renderMS + 1
	b.span(1, 0, "web", "GET /orders", server, 0, end, nil)
	b.span(2, 1, "web", fmt.Sprintf("SELECT * FROM orders WHERE id = %d", 10000+id), client, 1, 1+selectMS, nil, kv("server.address", replica))
	b.span(3, 1, "web", "render", tracepb.Span_SPAN_KIND_INTERNAL, 1+selectMS, 1+selectMS+renderMS, nil)
	return b.t
}

// TestDiagnoseLiteralNames diagnoses a database replica that made every
// query 0.5 ms slower, where each query's span is named by its literal
// SQL: no name is in more than one trace, and rendering, one name, varies
// by a millisecond. Counted as one operation, the queries rank first.
func TestDiagnoseLiteralNames(t *testing.T) {
	var window, baseline []*Trace
	for i := range 1000 {
		jitter := float64(i%5) / 4
		baseline = append(baseline, literalQuery(i, 2, 4+jitter, fmt.Sprint("db-", i%2)))
		if i%2 == 0 {
			window = append(window, literalQuery(5000+i, 3, 4+jitter, "db-2"))
		} else {
			window = append(window, literalQuery(5000+i, 2, 4+float64((i+1)%5)/4, "db-1"))
		}
	}
	d := Diagnose(window, baseline, &DiagnoseOptions{Service: "web", Operation: "GET /orders"})
	if len(d.Operations) == 0 || d.WithinNoise {
		t.Fatalf("%d culprits, within noise %v: want the queries, beyond noise", len(d.Operations), d.WithinNoise)
	}
	if c := d.Operations[0]; c.Service != "web" || c.Operation != "SELECT * FROM orders WHERE id = ?" || c.Names != 2000 {
		t.Errorf("first culprit %s: %q standing for %d names, want web: SELECT * FROM orders WHERE id = ? standing for 2,000", c.Service, c.Operation, c.Names)
	}
	if len(d.Attributes) == 0 || !names(d.Attributes[0], "server.address", "sdb-2") {
		t.Errorf("attributes %+v, want server.address=db-2 first", d.Attributes)
	}
	for _, tr := range window {
		if name := tr.Spans[1].Name; !strings.HasSuffix(name, fmt.Sprint(10000+int(tr.ID[14])<<8+int(tr.ID[15]))) {
			t.Fatalf("the window's trace %x has its query named %q: Diagnose renamed the caller's spans", tr.ID, name)
		}
	}
}

// TestDiagnoseEnumeratedNames diagnoses one of twelve operations named by
// their number, each in a twelfth of the traces, that became 10 ms slower:
// they share a shape but each is common, so they stay twelve operations,
// and the slow one is named.
func TestDiagnoseEnumeratedNames(t *testing.T) {
	traffic := func(first int, slow bool) []*Trace {
		var ts []*Trace
		for i := range 600 {
			part := i%12 + 1
			ms := 2 + float64(i%5)/4
			if slow && part == 7 {
				ms += 10
			}
			b := newTrace(first + i)
			b.span(1, 0, "web", "GET /feed", server, 0, ms+2, nil)
			b.span(2, 1, "web", fmt.Sprintf("partition-%d read", part), client, 1, 1+ms, nil)
			ts = append(ts, b.t)
		}
		return ts
	}
	d := Diagnose(traffic(1000, true), traffic(0, false), &DiagnoseOptions{Service: "web", Operation: "GET /feed"})
	if len(d.Operations) == 0 {
		t.Fatal("no culprit")
	}
	if c := d.Operations[0]; c.Operation != "partition-7 read" || c.Names != 0 {
		t.Errorf("first culprit %q standing for %d names, want partition-7 read alone", c.Operation, c.Names)
	}
}
