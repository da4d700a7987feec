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
}

// Correlate scores every attribute value on any span or resource of the
// traces, and every operation, by how much more often the selected traces
// than the baseline traces carry it, the highest score first; of values
// that score alike on as many selected traces, readable ones come before
// opaque identifiers (see opaque).
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
	return fs.correlate(sel, len(selected), base, len(baseline), opts.EnsureDefaults())
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

// tally counts the traces each feature is on.
func (fs *featureSet) tally(traces []*Trace) []int {
	var counts []int
	var ids []int32
	for _, t := range traces {
		ids = fs.of(t, ids)
		counts = count(counts, ids, len(fs.features))
	}
	return counts
}

func count(counts []int, ids []int32, n int) []int {
	if len(counts) < n {
		counts = append(counts, make([]int, n-len(counts))...)
	}
	for _, id := range ids {
		counts[id]++
	}
	return counts
}

// correlate scores the features counted in sel over nSel selected traces
// against those in base over nBase baseline traces.
func (fs *featureSet) correlate(sel []int, nSel int, base []int, nBase int, opts CorrelationOptions) (attributes, operations []Correlation) {
	minTraces := max(opts.MinTraces, int(math.Ceil(opts.MinShare*float64(nSel))))
	for id, f := range fs.features {
		c := Correlation{Service: f.service, Key: f.key, Value: f.value, Operation: f.operation}
		if id < len(sel) {
			c.Selected = sel[id]
		}
		if id < len(base) {
			c.Baseline = base[id]
		}
		if c.Selected < minTraces {
			continue
		}
		c.SelectedShare = float64(c.Selected) / float64(nSel)
		if nBase > 0 {
			c.BaselineShare = float64(c.Baseline) / float64(nBase)
		}
		c.Score = c.SelectedShare - c.BaselineShare
		if f.key == "" {
			operations = append(operations, c)
			continue
		}
		c.Symptom = isSymptom(f.key)
		attributes = append(attributes, c)
	}
	byScore := func(a, b Correlation) int {
		return cmp.Or(cmp.Compare(b.Score, a.Score), cmp.Compare(b.Selected, a.Selected),
			compareBool(opaque(a.Key, a.Value), opaque(b.Key, b.Value)), cmp.Compare(a.Service, b.Service),
			cmp.Compare(a.Key, b.Key), cmp.Compare(a.Operation, b.Operation), cmp.Compare(valueString(a.Value), valueString(b.Value)))
	}
	slices.SortFunc(attributes, byScore)
	slices.SortFunc(operations, byScore)
	return attributes, operations
}

// opaque says whether an attribute value is an identifier a person cannot
// read: a key ending in .id, .uid or .pid, or a value of 16 or more hex
// digits and dashes. A new pod, or a new version's pods, bring a new
// instance ID, pod UID, container ID and process ID along with their new
// name and version; all are on the same traces and score alike, and the
// readable ones should rank first.
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
		"db.response.status_code", "status", "status_code":
		return true
	}
	return strings.HasPrefix(key, "exception.") || strings.HasPrefix(key, "error.")
}
