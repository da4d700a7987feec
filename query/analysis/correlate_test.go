package analysis

import (
	"fmt"
	"strings"
	"testing"

	commonpb "go.opentelemetry.io/proto/otlp/common/v1"
)

// TestCorrelate scores values against hand-computed ones. Of 4 selected
// traces, 3 run version 2.9.0 on inventory's resource, 1 of 6 baseline
// traces does: 3/4 - 1/6. Each trace has a user ID of its own: one
// selected trace each, under the support of 2, so none ranks, though each
// would score 1/4, above real signals weaker than that.
func TestCorrelate(t *testing.T) {
	trace := func(id int, version string, region string, status int) *Trace {
		b := newTrace(id)
		b.span(1, 0, "web", "GET /", server, 0, 10, nil, kv("user.id", id), kv("region", region))
		b.span(2, 1, "inventory", "SELECT", client, 1, 9, []*commonpb.KeyValue{kv("service.version", version)})
		if status != 0 {
			b.t.Spans[0].Attrs = append(b.t.Spans[0].Attrs, kv("http.status_code", status))
		}
		return b.t
	}
	selected := []*Trace{trace(1, "2.9.0", "eu", 500), trace(2, "2.9.0", "eu", 500), trace(3, "2.9.0", "us", 0), trace(4, "2.8.0", "us", 0)}
	var baseline []*Trace
	for i := range 6 {
		v := "2.8.0"
		if i == 0 {
			v = "2.9.0"
		}
		region := "us"
		if i < 3 {
			region = "eu"
		}
		baseline = append(baseline, trace(10+i, v, region, 0))
	}
	attrs, ops := Correlate(selected, baseline, &CorrelationOptions{MinTraces: 2})
	type want struct {
		service, key, value string
		score               float64
		sel, base           int
		symptom             bool
	}
	wants := []want{
		{"inventory", "service.version", "s2.9.0", 3.0/4 - 1.0/6, 3, 1, false},
		{"web", "http.status_code", "i500", 2.0 / 4, 2, 0, true},
		// Ties: on more selected traces first, then by service and key.
		{"inventory", "service.name", "sinventory", 0, 4, 6, false},
		{"web", "service.name", "sweb", 0, 4, 6, false},
		{"web", "region", "seu", 2.0/4 - 3.0/6, 2, 3, false},
		{"web", "region", "sus", 2.0/4 - 3.0/6, 2, 3, false},
	}
	// 2.8.0 is on one selected trace, under the support of 2.
	if len(attrs) != len(wants) {
		t.Fatalf("%d attributes ranked, want %d: %+v", len(attrs), len(wants), attrs)
	}
	for i, w := range wants {
		a := attrs[i]
		if a.Service != w.service || a.Key != w.key || valueString(a.Value) != w.value || !near(a.Score, w.score) ||
			a.Selected != w.sel || a.Baseline != w.base || a.Symptom != w.symptom ||
			!near(a.SelectedShare, float64(w.sel)/4) || !near(a.BaselineShare, float64(w.base)/6) {
			t.Errorf("attribute %d: %+v, want %+v", i, a, w)
		}
	}
	// Both operations are on every trace.
	if len(ops) != 2 || ops[0].Score != 0 || ops[1].Score != 0 || ops[0].Selected != 4 {
		t.Errorf("operations %+v, want both at 0", ops)
	}
}

// TestCorrelateMinShare ranks no value seen on fewer than 5% of the
// selected traces, however many traces that is.
func TestCorrelateMinShare(t *testing.T) {
	var selected []*Trace
	for i := range 200 {
		b := newTrace(i)
		b.span(1, 0, "web", "GET /", server, 0, 10, nil, kv("customer", i%25))
		selected = append(selected, b.t)
	}
	attrs, _ := Correlate(selected, nil, nil)
	for _, a := range attrs {
		if a.Key == "customer" {
			t.Fatalf("customer %v ranked on 8 of 200 traces, under 5%%: %+v", valueString(a.Value), a)
		}
	}
}

// TestCorrelateAliases ranks the values of a new pod of a new version: its
// version, name, runtime version, container ID, pod UID and process ID are
// on exactly the same traces, and rank as one entry, named by the
// service's version, listing the others readable first. The host, which the new pod shares with an old one, is on
// more traces and ranks on its own; so do two zones on as many traces as
// each other, but not the same ones.
func TestCorrelateAliases(t *testing.T) {
	trace := func(id int, host, pod, runtime, zone string) *Trace {
		b := newTrace(id)
		b.span(1, 0, "cart", "GET", server, 0, 10, []*commonpb.KeyValue{kv("container.id", "4f9c2d0e1b7a6c35"+pod),
			kv("host.name", host), kv("k8s.pod.name", "cart-"+pod), kv("k8s.pod.uid", "0c1d2e3f-aaaa-bbbb-cccc-"+pod),
			kv("process.pid", int(pod[0])), kv("process.runtime.version", runtime), kv("service.version", "v-"+pod)}, kv("zone", zone))
		return b.t
	}
	var selected, baseline []*Trace
	for i := range 10 {
		zone := []string{"a", "b"}[i%2]
		selected = append(selected, trace(i, "node-1", "ddddeeeeffff", "go1.26", zone))
		baseline = append(baseline, trace(100+i, "node-1", "000011112222", "go1.25", zone), trace(200+i, "node-2", "999988887777", "go1.25", "c"))
	}
	attrs, _ := Correlate(selected, baseline, nil)
	want := []string{
		"service.version=sv-ddddeeeeffff|k8s.pod.name=scart-ddddeeeeffff|process.runtime.version=sgo1.26|container.id=s4f9c2d0e1b7a6c35ddddeeeeffff|k8s.pod.uid=s0c1d2e3f-aaaa-bbbb-cccc-ddddeeeeffff|process.pid=i100 1.00",
		"host.name=snode-1 0.50",
		"zone=sa 0.25", "zone=sb 0.25",
		"service.name=scart 0.00",
	}
	if got := entries(attrs); fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("ranked\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}

// TestCorrelateAliasesNamedByInstance names a pod's entry by its name
// where its zone, the service's only pod there, is on the same traces:
// named by the zone, a fault of one pod read as a fault of the zone.
func TestCorrelateAliasesNamedByInstance(t *testing.T) {
	trace := func(id, pod int) *Trace {
		b := newTrace(id)
		b.span(1, 0, "inventory", "GET", server, 0, 10, []*commonpb.KeyValue{
			kv("cloud.availability_zone", fmt.Sprint("us-east-1", string(rune('a'+pod)))), kv("host.name", fmt.Sprint("inventory-", pod))})
		return b.t
	}
	var selected, baseline []*Trace
	for i := range 20 {
		selected = append(selected, trace(i, 2))
		baseline = append(baseline, trace(100+i, i%3))
	}
	attrs, _ := Correlate(selected, baseline, nil)
	if got := entries(attrs); len(got) == 0 || !strings.HasPrefix(got[0], "host.name=sinventory-2|cloud.availability_zone=sus-east-1c ") {
		t.Errorf("ranked\n%s\nwant the pod's name first, its zone an alias", strings.Join(got, "\n"))
	}
}

// TestCorrelateAliasesNeedSameTraces folds no values that are on the same
// selected traces but not the same baseline ones, or the reverse, though
// they score alike; nor a symptom and a cause on the same traces.
func TestCorrelateAliasesNeedSameTraces(t *testing.T) {
	var selected, baseline []*Trace
	for i := range 10 {
		b := newTrace(i)
		attrs := []*commonpb.KeyValue{kv("queue", "q1"), kv("shard", "s1"), kv("http.response.status_code", 503), kv("retry.exhausted", "yes")}
		if i < 5 {
			attrs = append(attrs, kv("tier", "t1"))
		} else {
			attrs = append(attrs, kv("lane", "l1"))
		}
		b.span(1, 0, "cart", "GET", server, 0, 10, nil, attrs...)
		selected = append(selected, b.t)
	}
	for j := range 20 {
		b := newTrace(100 + j)
		var attrs []*commonpb.KeyValue
		switch {
		case j < 5:
			attrs = append(attrs, kv("queue", "q1"))
		case j < 10:
			attrs = append(attrs, kv("shard", "s1"))
		}
		if j < 3 {
			attrs = append(attrs, kv("tier", "t1"), kv("lane", "l1"))
		}
		b.span(1, 0, "cart", "GET", server, 0, 10, nil, attrs...)
		baseline = append(baseline, b.t)
	}
	attrs, _ := Correlate(selected, baseline, nil)
	want := []string{
		"http.response.status_code=i503 1.00", "retry.exhausted=syes 1.00",
		"queue=sq1 0.75", "shard=ss1 0.75",
		"lane=sl1 0.35", "tier=st1 0.35",
		"service.name=scart 0.00",
	}
	if got := entries(attrs); fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("ranked\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}

// entries writes ranked values as key=value, their aliases after a |, and
// their scores.
func entries(attrs []Correlation) []string {
	var out []string
	for _, a := range attrs {
		entry := fmt.Sprintf("%s=%s", a.Key, valueString(a.Value))
		for _, alias := range a.Aliases {
			entry += fmt.Sprintf("|%s=%s", alias.Key, valueString(alias.Value))
		}
		out = append(out, fmt.Sprintf("%s %.2f", entry, a.Score))
	}
	return out
}

// TestIsSymptom: keys that restate a failure, a count of errors, and a
// retry's number, which says an attempt before it failed, are symptoms;
// what could explain one is not.
func TestIsSymptom(t *testing.T) {
	for key, want := range map[string]bool{
		"error.type": true, "exception.message": true, "http.response.status_code": true,
		"rpc.grpc.status_code": true, "http.request.resend_count": true, "retry.attempt": true, "rpc.retry_count": true,
		"graphql.error.count": true, "app.errors_count": true,
		"service.version": false, "host.name": false, "server.address": false, "retry.policy": false,
	} {
		if got := isSymptom(key); got != want {
			t.Errorf("isSymptom(%q) = %v, want %v", key, got, want)
		}
	}
}
