package analysis

import (
	"cmp"
	"math"
	"slices"
	"strings"

	commonpb "go.opentelemetry.io/proto/otlp/common/v1"
)

// CorrelationOptions bound which values may rank. The zero value is ready
// to use.
type CorrelationOptions struct {
	// MinTraces is the fewest selected traces a value must be seen on to
	// rank at all. Default 5.
	MinTraces int
	// MinShare is the smallest share of the selected traces a value must
	// be seen on to rank at all, whatever MinTraces says. Default 0.05.
	MinShare float64
}

// EnsureDefaults returns a copy of o (which may be nil) with every zero field
// set to its default.
func (o *CorrelationOptions) EnsureDefaults() CorrelationOptions {
	var c CorrelationOptions
	if o != nil {
		c = *o
	}
	if c.MinTraces <= 0 {
		c.MinTraces = 5
	}
	if c.MinShare <= 0 {
		c.MinShare = 0.05
	}
	return c
}

// Correlation scores how much more often selected traces than baseline
// traces carry an attribute value, or an operation.
type Correlation struct {
	// Service is the service of the spans or resources the value is on.
	Service string
	// Key and Value name an attribute; Key is empty for an operation.
	Key   string
	Value *commonpb.AnyValue
	// Operation names an operation of Service, for an operation.
	Operation string
	// Score is SelectedShare - BaselineShare, in [-1, 1]: 1 if every
	// selected trace and no baseline trace has it.
	Score float64
	// Selected and Baseline count the traces that have it.
	Selected, Baseline           int
	SelectedShare, BaselineShare float64
	// Symptom marks an attribute that restates a failure, such as a status
	// code or an exception, rather than telling what led to it.
	Symptom bool
	// Aliases are the other values of Service on exactly the same selected
	// and baseline traces as this one, folded into it: a pod's name, UID,
	// instance, container and process IDs say the same thing, and would
	// otherwise take five ranks, pushing the values after them down.
	Aliases []*commonpb.KeyValue
}

// Correlate scores every attribute value on any span or resource of the
// traces, and every operation, by how much more often the selected traces
// than the baseline traces carry it, the highest score first; of values
// that score alike on as many selected traces, the service's version comes
// first and opaque identifiers last (see legibility). Attribute values of
// a service on exactly the same traces of both sets, symptoms or not
// alike, are one entry, the first of them, listing the others as Aliases;
// operations are never folded.
//
// A value seen on fewer selected traces than the larger of
// opts.MinTraces and opts.MinShare of them does not rank: its share of the
// selection could be chance, and values unique to a request (user IDs,
// order IDs, URLs with IDs) are all such. A signal shared by the traces that
// went wrong is on many of them; a value seen on 5 of 1000 slow traces
// explains at most half a percent of them anyway.
func Correlate(selected, baseline []*Trace, opts *CorrelationOptions) (attributes, operations []Correlation) {
	var fs featureSet
	sel := fs.tally(selected)
	base := fs.tally(baseline)
	return fs.correlate(sel, base, opts.EnsureDefaults())
}

// feature is an attribute value, or an operation, of a service.
type feature struct {
	service, key string
	value        *commonpb.AnyValue
	operation    string
}

// featureSet numbers the features of traces.
type featureSet struct {
	features []feature
	index    map[string]int32
	// resources caches the features of resources by their attributes'
	// first element and service: traces read together share the resource
	// messages of their chunk.
	resources map[resourceRef][]int32
	buf       []byte
	// traces counts the traces tallied, to give each its own token.
	traces uint64
}

type resourceRef struct {
	first   *commonpb.KeyValue
	service string
}

// id returns the number of the feature keyed by fs.buf, numbering it f if
// it has none yet.
func (fs *featureSet) id(f feature) int32 {
	if id, ok := fs.index[string(fs.buf)]; ok {
		return id
	}
	id := int32(len(fs.features))
	fs.index[string(fs.buf)] = id
	fs.features = append(fs.features, f)
	return id
}

func (fs *featureSet) attr(service string, kv *commonpb.KeyValue) int32 {
	fs.buf = append(append(append(append(fs.buf[:0], service...), 0), kv.Key...), 0)
	fs.buf = appendValue(fs.buf, kv.GetValue())
	return fs.id(feature{service: service, key: kv.Key, value: kv.GetValue()})
}

// of returns the features of t, each once.
func (fs *featureSet) of(t *Trace, into []int32) []int32 {
	if fs.index == nil {
		fs.index = map[string]int32{}
		fs.resources = map[resourceRef][]int32{}
	}
	into = into[:0]
	resourceService := make([]string, len(t.Resources))
	for i := range t.Spans {
		s := &t.Spans[i]
		resourceService[s.Resource] = s.Service
		fs.buf = append(append(append(fs.buf[:0], s.Service...), 1), s.Name...)
		into = append(into, fs.id(feature{service: s.Service, operation: s.Name}))
		for _, kv := range s.Attrs {
			into = append(into, fs.attr(s.Service, kv))
		}
	}
	for i, attrs := range t.Resources {
		if resourceService[i] == "" || len(attrs) == 0 {
			continue // no span of the trace is on it, or it has no attributes
		}
		ref := resourceRef{attrs[0], resourceService[i]}
		ids, ok := fs.resources[ref]
		if !ok {
			for _, kv := range attrs {
				ids = append(ids, fs.attr(resourceService[i], kv))
			}
			fs.resources[ref] = ids
		}
		into = append(into, ids...)
	}
	slices.Sort(into)
	return slices.Compact(into)
}

// tally is what a set of traces holds of each feature.
type tally struct {
	traces int
	// counts is the number of traces each feature is on.
	counts []int
	// prints sums a pseudo-random token of each trace into every feature
	// on it: features on the same traces have the same sum, and features
	// on different ones almost surely different sums.
	prints []uint64
}

func (t tally) of(id int) (count int, print uint64) {
	if id < len(t.counts) {
		return t.counts[id], t.prints[id]
	}
	return 0, 0
}

// tally counts the traces each feature is on.
func (fs *featureSet) tally(traces []*Trace) tally {
	t := tally{traces: len(traces)}
	var ids []int32
	for _, tr := range traces {
		ids = fs.of(tr, ids)
		if n := len(fs.features); len(t.counts) < n {
			t.counts = append(t.counts, make([]int, n-len(t.counts))...)
			t.prints = append(t.prints, make([]uint64, n-len(t.prints))...)
		}
		fs.traces++
		token := splitmix64(fs.traces)
		for _, id := range ids {
			t.counts[id]++
			t.prints[id] += token
		}
	}
	return t
}

// splitmix64 is SplitMix64's output function: distinct inputs give
// distinct, well-mixed outputs.
func splitmix64(x uint64) uint64 {
	x += 0x9e3779b97f4a7c15
	x = (x ^ x>>30) * 0xbf58476d1ce4e5b9
	x = (x ^ x>>27) * 0x94d049bb133111eb
	return x ^ x>>31
}

// correlate scores the features tallied in sel against those in base.
func (fs *featureSet) correlate(sel, base tally, opts CorrelationOptions) (attributes, operations []Correlation) {
	minTraces := max(opts.MinTraces, int(math.Ceil(opts.MinShare*float64(sel.traces))))
	type traceSet struct {
		service                  string
		symptom                  bool
		selected, baseline       int
		selectedPrint, basePrint uint64
	}
	var sets []traceSet // of each of attributes
	for id, f := range fs.features {
		c := Correlation{Service: f.service, Key: f.key, Value: f.value, Operation: f.operation}
		var ts traceSet
		c.Selected, ts.selectedPrint = sel.of(id)
		c.Baseline, ts.basePrint = base.of(id)
		if c.Selected < minTraces {
			continue
		}
		c.SelectedShare = float64(c.Selected) / float64(sel.traces)
		if base.traces > 0 {
			c.BaselineShare = float64(c.Baseline) / float64(base.traces)
		}
		c.Score = c.SelectedShare - c.BaselineShare
		if f.key == "" {
			operations = append(operations, c)
			continue
		}
		c.Symptom = isSymptom(f.key)
		ts.service, ts.symptom, ts.selected, ts.baseline = c.Service, c.Symptom, c.Selected, c.Baseline
		sets = append(sets, ts)
		attributes = append(attributes, c)
	}
	byScore := func(a, b Correlation) int {
		return cmp.Or(cmp.Compare(b.Score, a.Score), cmp.Compare(b.Selected, a.Selected),
			cmp.Compare(legibility(a.Key, a.Value), legibility(b.Key, b.Value)), cmp.Compare(a.Service, b.Service),
			cmp.Compare(a.Key, b.Key), cmp.Compare(a.Operation, b.Operation), cmp.Compare(valueString(a.Value), valueString(b.Value)))
	}
	order := make([]int, len(attributes))
	for i := range order {
		order[i] = i
	}
	slices.SortFunc(order, func(i, j int) int { return byScore(attributes[i], attributes[j]) })
	first := map[traceSet]int{} // index in folded
	folded := make([]Correlation, 0, len(attributes))
	for _, i := range order {
		c := attributes[i]
		if at, ok := first[sets[i]]; ok {
			folded[at].Aliases = append(folded[at].Aliases, &commonpb.KeyValue{Key: c.Key, Value: c.Value})
			continue
		}
		first[sets[i]] = len(folded)
		folded = append(folded, c)
	}
	slices.SortFunc(operations, byScore)
	return folded, operations
}

// legibility orders values that score alike on as many traces, which are
// often aliases (see Correlation.Aliases): the service's version first,
// since it names a change someone made and a new version's pods bring new
// names and identifiers with it (and may bring a new runtime or OS
// version, which is why only the service's ranks first); then the name of
// the instance, a pod's or a host's, the narrowest place the traces
// share: where a service has one pod in a zone, the zone is on exactly
// the pod's traces, and named first it read as a fault of the zone; then
// other readable values; then opaque identifiers.
func legibility(key string, v *commonpb.AnyValue) int {
	switch {
	case key == "service.version" || key == "version":
		return 0
	case opaque(key, v):
		return 3
	case key == "k8s.pod.name" || key == "host.name" || key == "container.name":
		return 1
	}
	return 2
}

// opaque says whether an attribute value is an identifier a person cannot
// read: a key ending in .id, .uid, .pid or _id, or a value of 16 or more
// hex digits and dashes. Such values name an alias group last (see
// legibility).
func opaque(key string, v *commonpb.AnyValue) bool {
	for _, suffix := range []string{".id", ".uid", ".pid", "_id"} {
		if strings.HasSuffix(key, suffix) {
			return true
		}
	}
	x := v.GetStringValue()
	if len(x) < 16 {
		return false
	}
	for _, c := range x {
		if !('0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F' || c == '-') {
			return false
		}
	}
	return true
}

// isSymptom says whether an attribute key restates that a request failed,
// and how, rather than telling what led to it.
func isSymptom(key string) bool {
	switch key {
	case "error", "error.type", "error.message", "otel.status_code", "otel.status_description",
		"http.status_code", "http.response.status_code", "rpc.grpc.status_code", "rpc.connect_rpc.error_code",
		"db.response.status_code", "status", "status_code",
		"http.request.resend_count": // a retry's number: an attempt before it failed
		return true
	}
	// A retry's number under the names other instrumentations give it, and
	// a count of the errors an answer carries (graphql.error.count).
	for _, suffix := range []string{"retry.attempt", "retry.count", "retry_count", "retry_attempt", "resend_count",
		"error.count", "error_count", "errors.count", "errors_count"} {
		if strings.HasSuffix(key, suffix) {
			return true
		}
	}
	return strings.HasPrefix(key, "exception.") || strings.HasPrefix(key, "error.")
}
